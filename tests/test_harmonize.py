"""ComBat: site effects removed, covariates kept, and no leakage when fitted inside folds."""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from bids_mdd.harmonize import (
    CombatFit,
    HarmonizationError,
    fit_combat,
    site_variance_explained,
)

pytestmark = pytest.mark.unit  # make test-fast

SITE_SHIFT = {"A": 0.0, "B": 1.0, "C": -0.5, "D": 0.7}
SITE_SCALE = {"A": 1.0, "B": 3.0, "C": 0.5, "D": 2.0}


def cohort(effect: float, n: int = 80, n_features: int = 400, seed: int = 0):
    """Participants x features with a shift and scale per site and ``effect`` in the first 50
    features of the MDD participants (label 1)."""
    rng = np.random.default_rng(seed)
    sites = np.array(list(SITE_SHIFT))[rng.integers(0, 4, n)]
    diagnosis = rng.permutation(np.arange(n) % 2)
    age = rng.uniform(20, 60, n)
    shift = np.array([SITE_SHIFT[s] for s in sites])[:, None]
    scale = np.array([SITE_SCALE[s] for s in sites])[:, None]
    data = shift + scale * rng.standard_normal((n, n_features))
    data[:, :50] += effect * diagnosis[:, None]
    return data, sites, pd.DataFrame({"diagnosis": diagnosis, "age": age})


def test_site_effects_go_and_the_diagnosis_effect_stays() -> None:
    data, sites, covariates = cohort(effect=-0.8)
    fit, harmonised = fit_combat(data, sites, covariates, categorical=["diagnosis"],
                                 continuous=["age"])
    before = site_variance_explained(data, sites).mean()
    after = site_variance_explained(harmonised, sites).mean()
    assert before > 0.1 and after < 0.02
    dx = covariates["diagnosis"].to_numpy() == 1
    difference = harmonised[dx, :50].mean() - harmonised[~dx, :50].mean()
    assert difference == pytest.approx(-0.8, abs=0.1)  # in site A's units, the pooled scale
    assert abs(harmonised[dx, 50:].mean() - harmonised[~dx, 50:].mean()) < 0.05
    # applied to participants it was not fitted on, with their sites only (no labels)
    new, new_sites, _ = cohort(effect=0.0, n=40, seed=1)
    applied = fit.apply(new, new_sites)
    chance = 3 / (len(new) - 1)  # eta squared of 4 sites without any site effect
    assert site_variance_explained(new, new_sites).mean() > 0.1
    assert site_variance_explained(applied, new_sites).mean() < 1.3 * chance


def _cv_accuracy(data, sites, covariates, *, fit_inside_folds: bool) -> float:
    labels = covariates["diagnosis"].to_numpy()
    if not fit_inside_folds:  # the leak: ComBat on everyone, test participants' labels included
        _, data = fit_combat(data, sites, covariates, categorical=["diagnosis"])
    correct = 0
    for train, test in StratifiedKFold(5, shuffle=True, random_state=0).split(data, labels):
        train_x, test_x = data[train], data[test]
        if fit_inside_folds:
            fit, train_x = fit_combat(train_x, sites[train], covariates.iloc[train],
                                      categorical=["diagnosis"])
            test_x = fit.apply(test_x, sites[test])
        model = LogisticRegression(C=1.0, max_iter=2000).fit(train_x, labels[train])
        correct += int((model.predict(test_x) == labels[test]).sum())
    return correct / len(labels)


def test_applying_a_fit_is_neurocombats_own_from_training() -> None:
    from neuroCombat import neuroCombatFromTraining

    data, sites, covariates = cohort(effect=-0.5, n_features=60)
    fit, _ = fit_combat(data[:60], sites[:60], covariates.iloc[:60], categorical=["diagnosis"],
                        continuous=["age"])
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore", DeprecationWarning)  # its int(array) conversions
        reference = neuroCombatFromTraining(data[60:].T, sites[60:], fit.estimates())["data"]
    np.testing.assert_allclose(fit.apply(data[60:], sites[60:]), reference.T, rtol=1e-10)


def test_fitting_on_everyone_leaks_and_fitting_in_folds_does_not() -> None:
    """No diagnosis effect at all. ComBat told to keep diagnosis and fitted on all
    participants makes each feature's residuals sum to zero within each diagnosis over
    everyone, so the training folds' class means mirror the test fold's: the test labels are
    decoded, inverted (accuracy far below chance, as wrong as far above it). Fitted on the
    training folds and applied with sites only, accuracy stays at chance."""
    accuracies = {inside: [] for inside in (False, True)}
    for seed in range(3):
        data, sites, covariates = cohort(effect=0.0, n=80, n_features=2000, seed=seed)
        for inside in (False, True):
            accuracies[inside].append(_cv_accuracy(data, sites, covariates,
                                                   fit_inside_folds=inside))
    assert abs(np.mean(accuracies[False]) - 0.5) > 0.3, accuracies
    assert abs(np.mean(accuracies[True]) - 0.5) < 0.1, accuracies


def test_saved_fit_applies_the_same(tmp_path) -> None:
    data, sites, covariates = cohort(effect=-0.5, n_features=30)
    data[:, 3] = 2.0  # a constant feature passes through unchanged
    fit, _ = fit_combat(data, sites, covariates, categorical=["diagnosis"], continuous=["age"])
    fit.save(tmp_path / "combat.safetensors")
    loaded = CombatFit.load(tmp_path / "combat.safetensors")
    assert loaded.sites == ("A", "B", "C", "D") and loaded.covariates == ("diagnosis", "age")
    np.testing.assert_array_equal(loaded.apply(data, sites), fit.apply(data, sites))
    assert (fit.apply(data, sites)[:, 3] == 2.0).all() and not loaded.varying[3]
    assert loaded.knows("B") and not loaded.knows("E")
    (tmp_path / "other.safetensors").write_bytes(b"\x08" + bytes(7) + b'{"a": 1}')
    with pytest.raises(HarmonizationError, match="other.safetensors: not a saved ComBat fit"):
        CombatFit.load(tmp_path / "other.safetensors")


def test_a_sites_combat_is_an_affine_map_per_feature() -> None:
    """What the participant level runs inside the network's forward pass equals ComBat's."""
    data, sites, covariates = cohort(effect=-0.5, n_features=30)
    data[:, 5] = -1.0
    fit, _ = fit_combat(data, sites, covariates, categorical=["diagnosis"])
    for site in ("A", "C"):
        rows = np.array(sites) == site
        scale, shift = fit.site_affine(site)
        np.testing.assert_allclose(data[rows] * scale + shift, fit.apply(data[rows],
                                                                         np.array(sites)[rows]),
                                   rtol=1e-10, atol=1e-10)
        assert scale[5] == 1.0 and shift[5] == 0.0
        assert not np.allclose(scale[fit.varying], 1.0)
    with pytest.raises(HarmonizationError, match="site E not in the ComBat fit"):
        fit.site_affine("E")


def test_data_combat_cannot_take_is_one_line() -> None:
    data, sites, covariates = cohort(effect=0.0, n_features=10)
    fit, _ = fit_combat(data, sites)
    with pytest.raises(HarmonizationError, match="site.s. E not in the ComBat fit"):
        fit.apply(data[:2], ["A", "E"])
    with pytest.raises(HarmonizationError, match="at least 2 participants per site: E has 1"):
        fit_combat(data, [*sites[:-1], "E"])
    with pytest.raises(HarmonizationError, match="at least 2 sites"):
        fit_combat(data, ["A"] * len(data))
    confounded = covariates.assign(diagnosis=(sites == "A").astype(int))
    with pytest.raises(HarmonizationError, match="cannot be told apart"):
        fit_combat(data, sites, confounded, categorical=["diagnosis"])
    with pytest.raises(HarmonizationError, match="the same mask and grid"):
        fit.apply(data[:, :5], sites)
