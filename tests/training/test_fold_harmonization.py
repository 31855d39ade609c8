"""ComBat inside the folds: each fold's fit sees its training part only."""

from __future__ import annotations

import numpy as np
import pytest

from bids_mdd.models.task import Task
from bids_mdd.training.harmonization import FoldHarmonizer
from bids_mdd.training.splits import Fold

pytestmark = pytest.mark.unit  # make test-fast


def _cohort(seed: int = 0):
    rng = np.random.default_rng(seed)
    sites = np.repeat(np.array(["a", "b", "c"]), 12)
    shift = {"a": 0.0, "b": 2.0, "c": -1.0}
    inputs = rng.standard_normal((36, 4, 5, 3)).astype(np.float32)
    inputs += np.array([shift[s] for s in sites], dtype=np.float32)[:, None, None, None]
    target = np.tile([0, 1], 18)
    return inputs, sites, target


def test_a_fold_harmonises_with_its_training_part_only() -> None:
    inputs, sites, target = _cohort()
    train = np.array([i for i in range(36) if i % 3 != 0 and sites[i] != "c"])
    val = np.array([i for i in range(36) if i % 3 == 0 and sites[i] != "c"])
    test = np.flatnonzero(sites == "c")  # a site the training part never saw
    fold = Fold(0, 0, train, val, test)
    harmonised = FoldHarmonizer(inputs, sites, target, Task.CLASSIFICATION)(fold)
    assert harmonised.shape == inputs.shape
    # the site shifts are gone in every part, the new site's included
    means = {s: harmonised[sites == s].mean() for s in "abc"}
    assert max(means.values()) - min(means.values()) < 0.2
    # the validation and test participants' data never reach the training part's fit
    altered = inputs.copy()
    altered[np.concatenate([val, test])] += 50.0
    again = FoldHarmonizer(altered, sites, target, Task.CLASSIFICATION)(fold)
    np.testing.assert_allclose(again[train], harmonised[train], rtol=1e-5)
    # nor do their labels
    relabelled = target.copy()
    relabelled[np.concatenate([val, test])] = 1 - relabelled[np.concatenate([val, test])]
    third = FoldHarmonizer(inputs, sites, relabelled, Task.CLASSIFICATION)(fold)
    np.testing.assert_allclose(third, harmonised, rtol=1e-5)


def test_a_site_effect_in_some_voxels_goes_unless_pooled_across_voxels() -> None:
    """One site's GM 30 % lower in 5 of 400 voxels (a coil, a distortion), like the synthetic
    sites' offset regions. Each voxel's own estimates (the default) remove it from that site's
    test participants; empirical Bayes shrinks those voxels' site effect towards the site's
    whole-brain one (about zero) and leaves much of it."""
    rng = np.random.default_rng(3)
    sites = np.repeat(np.array(["a", "b", "c", "d"]), 15)
    flat = (1.0 + 0.1 * rng.standard_normal((60, 400))).astype(np.float32)
    flat[sites == "b", :5] *= 0.7
    inputs = flat.reshape(60, 20, 20, 1)
    target = np.tile([0, 1], 30)
    test = np.flatnonzero(np.arange(60) % 5 == 0)
    fold = Fold(0, 0, np.setdiff1d(np.arange(60), test), np.array([], int), test)
    b, others = test[sites[test] == "b"], test[sites[test] != "b"]

    def gap(data: np.ndarray) -> float:  # the other sites' mean less site b's, offset voxels
        data = data.reshape(60, -1)
        return float(data[others, :5].mean() - data[b, :5].mean())

    before = gap(inputs)
    assert before == pytest.approx(0.3, abs=0.05)
    own = FoldHarmonizer(inputs, sites, target, Task.CLASSIFICATION)(fold)
    pooled = FoldHarmonizer(inputs, sites, target, Task.CLASSIFICATION, empirical_bayes=True)(fold)
    assert abs(gap(own)) < 0.05
    assert gap(pooled) > 0.3 * before
