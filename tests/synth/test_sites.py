"""Synthetic sites: confounded with diagnosis, each with its scanner signature, and none of them
changing the true anatomy."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bids_mdd.atlas import atlas_labels_on_grid, load_aal2
from bids_mdd.spaces.grids import CLASSIFIER_GRID
from bids_mdd.synth.cohort import generate_cohort
from bids_mdd.synth.model import CohortSpec
from bids_mdd.synth.sites import assign_sites, draw_sites

SPEC = CohortSpec(n_mdd=4, n_hc=4, seed=5, effect_size=1.0, resolution=3.0,
                  mni_derivatives=True, mni_t1w=False)
TRUE_GM = "derivatives/synthetic-truth/sub-{0}/anat/sub-{0}_label-GM_probseg.nii.gz"
GM_MAP = ("derivatives/bids_mdd-synthetic/sub-{0}/anat/"
          "sub-{0}_space-MNI152NLin2009cAsym_res-1p5_label-GM_desc-smooth8modulated_probseg.nii.gz")


def _sites(n: int = 4):
    return draw_sites(n, seed=1, offset=0.2, bias_sd=0.1, noise_fraction=0.02,
                      age_range=(18.0, 65.0), candidate_regions=["Lingual", "Cuneus",
                                                                 "Precuneus", "Angular"])


@pytest.mark.unit
def test_sites_are_confounded_with_diagnosis_and_each_holds_both_groups() -> None:
    sites = _sites()
    assert sorted(site.mdd_fraction for site in sites) == [0.1, 0.367, 0.633, 0.9]
    assert len({site.offset_region for site in sites}) == 4
    groups = np.array(["MDD"] * 30 + ["HC"] * 30)
    assigned = np.array(assign_sites(groups, sites, seed=1))
    share = {k: (groups[assigned == k] == "MDD").mean() for k in range(4)}
    by_fraction = sorted(range(4), key=lambda k: sites[k].mdd_fraction)
    assert [share[k] for k in by_fraction] == sorted(share.values())  # ordered as planned
    assert share[by_fraction[-1]] - share[by_fraction[0]] > 0.4
    small = np.array(assign_sites(np.array(["MDD"] * 4 + ["HC"] * 4), sites, seed=1))
    for k in range(4):
        assert sorted(np.array(["MDD"] * 4 + ["HC"] * 4)[small == k]) == ["HC", "MDD"]
    with pytest.raises(ValueError, match="at least 2"):
        CohortSpec(n_mdd=2, n_hc=2, seed=1, n_sites=1)


@pytest.fixture(scope="module")
def two_ways(templateflow_home, tmp_path_factory) -> dict[str, Path]:
    """One cohort generated without sites and with 2 (the same seed, so the same anatomy)."""
    root = tmp_path_factory.mktemp("sites")
    for name, spec in (("one", SPEC), ("two", replace(SPEC, n_sites=2))):
        generate_cohort(root / name, spec, n_jobs=2)
    return {"one": root / "one", "two": root / "two"}


def test_a_site_changes_the_images_not_the_anatomy(two_ways) -> None:
    truth = json.loads((two_ways["two"] / "ground_truth.json").read_text())
    table = pd.read_csv(two_ways["two"] / "participants.tsv", sep="\t", dtype=str)
    assert list(table.columns[:5]) == ["participant_id", "group", "age", "sex", "site"]
    sites = {site["name"]: site for site in truth["sites"]}
    assert set(table["site"]) == set(sites) == {"site1", "site2"}
    assert json.loads((two_ways["two"] / "participants.json").read_text())["site"]["Levels"]
    assert "site" not in pd.read_csv(two_ways["one"] / "participants.tsv", sep="\t")
    # group, sex and regional anatomy are the single-site cohort's; ages come from the site
    plain = pd.read_csv(two_ways["one"] / "participants.tsv", sep="\t", dtype=str)
    assert (plain["group"] == table["group"]).all() and (plain["sex"] == table["sex"]).all()
    for row in table.itertuples():
        low, high = sites[row.site]["age_range"]
        assert low <= float(row.age) <= high
    atlas = load_aal2()
    stems = atlas.hemisphere_stems()
    labels = atlas_labels_on_grid(CLASSIFIER_GRID.affine, CLASSIFIER_GRID.shape)
    for row in table.itertuples():
        label = row.participant_id[4:]
        site = sites[row.site]
        truth_map = TRUE_GM.format(label)
        if site["resolution_factor"] == 1.0:  # the same grid: the true GM map is unchanged
            np.testing.assert_array_equal(nib.load(two_ways["one"] / truth_map).get_fdata(),
                                          nib.load(two_ways["two"] / truth_map).get_fdata())
        seen = nib.load(two_ways["two"] / GM_MAP.format(label)).get_fdata()
        plain_map = nib.load(two_ways["one"] / GM_MAP.format(label)).get_fdata()
        ratio = seen / np.where(plain_map > 0.05, plain_map, np.nan)
        own = np.isin(labels, [i for i, s in stems.items() if s == site["offset_region"]])
        core = own & np.isfinite(ratio)
        elsewhere = ~own & np.isfinite(ratio) & (labels > 0)
        # the site's GM scale everywhere, and its offset on top in its own region
        assert np.nanmedian(ratio[elsewhere]) == pytest.approx(site["gm_scale"], abs=0.01)
        # (8 mm smoothing spreads the offset over its region's edges)
        assert np.nanpercentile(ratio[core], 10) < site["gm_scale"] * (1 - site["offset"] / 2)
        assert np.nanmedian(ratio[core]) < site["gm_scale"] * (1 - site["offset"] / 4)
