"""ComBat inside the folds: each fold's fit sees its training part only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bids_mdd.harmonize import fit_combat
from bids_mdd.training.harmonization import FoldHarmonizer
from bids_mdd.training.splits import Fold

pytestmark = pytest.mark.unit  # make test-fast


def _cohort(seed: int = 0):
    rng = np.random.default_rng(seed)
    sites = np.repeat(np.array(["a", "b", "c"]), 12)
    shift = {"a": 0.0, "b": 2.0, "c": -1.0}
    inputs = rng.standard_normal((36, 4, 5, 3)).astype(np.float32)
    inputs += np.array([shift[s] for s in sites], dtype=np.float32)[:, None, None, None]
    return inputs, sites


def test_a_fold_harmonises_with_its_training_part_only() -> None:
    inputs, sites = _cohort()
    train = np.array([i for i in range(36) if i % 3 != 0 and sites[i] != "c"])
    val = np.array([i for i in range(36) if i % 3 == 0 and sites[i] != "c"])
    test = np.flatnonzero(sites == "c")  # a site the training part never saw
    fold = Fold(0, 0, train, val, test)
    harmonised = FoldHarmonizer(inputs, sites)(fold)
    assert harmonised.shape == inputs.shape
    # the site shifts are gone in every part, the new site's included
    means = {s: harmonised[sites == s].mean() for s in "abc"}
    assert max(means.values()) - min(means.values()) < 0.2
    # the validation and test participants' data never reach the training part's fit
    altered = inputs.copy()
    altered[np.concatenate([val, test])] += 50.0
    again = FoldHarmonizer(altered, sites)(fold)
    np.testing.assert_allclose(again[train], harmonised[train], rtol=1e-5)


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
    test = np.flatnonzero(np.arange(60) % 5 == 0)
    fold = Fold(0, 0, np.setdiff1d(np.arange(60), test), np.array([], int), test)
    b, others = test[sites[test] == "b"], test[sites[test] != "b"]

    def gap(data: np.ndarray) -> float:  # the other sites' mean less site b's, offset voxels
        data = data.reshape(60, -1)
        return float(data[others, :5].mean() - data[b, :5].mean())

    before = gap(inputs)
    assert before == pytest.approx(0.3, abs=0.05)
    own = FoldHarmonizer(inputs, sites)(fold)
    pooled = FoldHarmonizer(inputs, sites, empirical_bayes=True)(fold)
    assert abs(gap(own)) < 0.05
    assert gap(pooled) > 0.3 * before


def _null_cohort_with_confounded_sites(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """120 participants x 400 features, no diagnosis effect; four sites with their own feature
    means and 15 % to 85 % patients."""
    rng = np.random.default_rng(seed)
    sites = np.repeat(np.array(list("ABCD")), 30)
    diagnosis = (rng.random(120) < np.repeat([0.15, 0.4, 0.6, 0.85], 30)).astype(int)
    shift = rng.normal(0.0, 1.0, (4, 400))[np.repeat(np.arange(4), 30)]
    return shift + rng.standard_normal((120, 400)), sites, diagnosis


def _balanced_accuracy(data: np.ndarray, sites: np.ndarray, diagnosis: np.ndarray,
                       keep_target: bool) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedKFold

    predicted = np.zeros(len(diagnosis), int)
    folds = StratifiedKFold(5, shuffle=True, random_state=0).split(data, diagnosis)
    for k, (train, test) in enumerate(folds):
        if keep_target:  # fitted on the training part only, applied by site only
            fit, train_x = fit_combat(data[train], sites[train],
                                      pd.DataFrame({"dx": diagnosis[train]}),
                                      categorical=["dx"], empirical_bayes=False)
            test_x = fit.apply(data[test], sites[test])
        else:
            fold = Fold(0, k, train, np.array([], int), test)
            out = FoldHarmonizer(data[:, :, None, None], sites)(fold)[:, :, 0, 0]
            train_x, test_x = out[train], out[test]
        model = LogisticRegression(C=1.0, max_iter=3000).fit(train_x, diagnosis[train])
        predicted[test] = model.predict(test_x)
    return balanced_accuracy_score(diagnosis, predicted)


def test_keeping_the_target_in_a_training_fit_leaks_each_sites_diagnosis_mix() -> None:
    """No diagnosis effect, sites confounded with diagnosis. ComBat told to keep the target,
    though fitted on training participants alone, leaves each site's harmonised mean at the
    training part's (noise) target effect times the site's share of patients: test
    participants move towards the patients by their site, and accuracy rises above chance.
    Fitted over the site alone, as ``FoldHarmonizer`` is, it stays at chance."""
    kept, site_only = np.mean([[_balanced_accuracy(*_null_cohort_with_confounded_sites(seed),
                                                   keep_target=keep) for keep in (True, False)]
                               for seed in range(3)], axis=0)
    assert kept > 0.6, kept
    assert abs(site_only - 0.5) < 0.06, site_only
