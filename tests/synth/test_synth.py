"""The synthetic cohort: layout, labelling, and the planted effect measured on its images."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from bids_mdd.atlas import load_aal2
from bids_mdd.cli.synth import main as synth_main
from bids_mdd.synth.cohort import generate_cohort
from bids_mdd.synth.model import (
    FACTOR_REGIONS,
    FACTORS,
    CohortSpec,
    SubjectDraw,
    factor_scores,
    regional_gm_scale,
)

SPEC = CohortSpec(n_mdd=5, n_hc=5, seed=3, effect_size=3.0, resolution=3.0)
TRUTH = Path("derivatives/synthetic-truth")


@pytest.fixture(scope="module")
def cohorts(templateflow_home, tmp_path_factory) -> dict[str, Path]:
    """The same seed twice: with the planted effect (d = 3) and without it (d = 0)."""
    root = tmp_path_factory.mktemp("synth")
    generate_cohort(root / "effect", SPEC, n_jobs=2)
    generate_cohort(root / "null", replace(SPEC, effect_size=0.0), n_jobs=2)
    return {"effect": root / "effect", "null": root / "null"}


def load(root: Path, subject: str, kind: str) -> np.ndarray:
    names = {"t1w": f"sub-{subject}/anat/sub-{subject}_T1w.nii.gz",
             "gm": f"{TRUTH}/sub-{subject}/anat/sub-{subject}_label-GM_probseg.nii.gz",
             "labels": f"{TRUTH}/sub-{subject}/anat/sub-{subject}_atlas-AAL2_dseg.nii.gz",
             "brain": f"{TRUTH}/sub-{subject}/anat/sub-{subject}_desc-brain_mask.nii.gz"}
    return np.asarray(nib.load(root / names[kind]).dataobj)


def participants(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / "participants.tsv", sep="\t", dtype={"participant_id": str})


def test_dataset_layout_and_labels(cohorts) -> None:
    root = cohorts["effect"]
    table = participants(root)
    assert list(table.columns) == ["participant_id", "group", "age", "sex", *FACTORS]
    assert table["group"].value_counts().to_dict() == {"MDD": 5, "HC": 5}
    assert table["age"].between(18, 65).all() and set(table["sex"]) <= {"M", "F"}
    description = json.loads((root / "dataset_description.json").read_text())
    assert description["SyntheticData"] is True and "SYNTHETIC" in description["Name"]
    assert "SYNTHETIC" in (root / "README").read_text()
    truth = json.loads((root / "ground_truth.json").read_text())
    assert truth["synthetic"] is True
    assert truth["planted_relative_gm_loss"] == pytest.approx(3.0 * SPEC.regional_gm_sd)
    assert [s["participant_id"] for s in truth["subjects"]] == list(table["participant_id"])
    for subject in table["participant_id"]:
        label = subject.removeprefix("sub-")
        image = nib.load(root / subject / "anat" / f"{subject}_T1w.nii.gz")
        assert image.shape == (75, 85, 75) and image.header.get_zooms() == (3.0, 3.0, 3.0)
        assert image.get_data_dtype() == np.int16
        assert json.loads((root / subject / "anat" / f"{subject}_T1w.json").read_text())[
            "SyntheticData"] is True
        assert load(root, label, "gm").shape == (75, 85, 75)


def test_whole_head_by_default(cohorts) -> None:
    t1w, brain = load(cohorts["effect"], "001", "t1w"), load(cohorts["effect"], "001", "brain")
    outside = ~ndimage.binary_dilation(brain > 0, iterations=2)
    wm = load(cohorts["effect"], "001", "t1w")[brain > 0].mean()
    assert np.percentile(t1w[outside], 90) > 0.2 * wm  # scalp and skull are there


def test_controls_are_identical_with_and_without_effect(cohorts) -> None:
    table = participants(cohorts["effect"])
    for subject in table.loc[table["group"] == "HC", "participant_id"]:
        label = subject.removeprefix("sub-")
        assert np.array_equal(load(cohorts["effect"], label, "t1w"),
                              load(cohorts["null"], label, "t1w"))


def test_planted_gm_loss_sits_in_planted_regions(cohorts) -> None:
    atlas = load_aal2()
    planted = [i for idx in atlas.indices_of(SPEC.regions).values() for i in idx]
    others = [i for idx in atlas.indices_of(FACTOR_REGIONS.values()).values() for i in idx]
    table = participants(cohorts["effect"])
    relative_losses = []
    for subject in table.loc[table["group"] == "MDD", "participant_id"]:
        label = subject.removeprefix("sub-")
        labels = load(cohorts["null"], label, "labels")
        gm_null = load(cohorts["null"], label, "gm")
        gm_effect = load(cohorts["effect"], label, "gm")
        lost = gm_null - gm_effect
        assert lost.min() > -1e-5  # GM is only ever removed
        in_planted = np.isin(labels, planted)
        near_planted = ndimage.binary_dilation(in_planted, iterations=3)
        assert lost[near_planted].sum() > 0.99 * lost.sum()
        relative_losses.append(lost[in_planted].sum() / gm_null[in_planted].sum())
        in_others = np.isin(labels, others)
        assert lost[in_others].sum() < 0.01 * gm_null[in_others].sum()
        # ...and the T1w image itself darkens there (same noise and bias in both cohorts)
        t1w_drop = load(cohorts["null"], label, "t1w").astype(float) - load(
            cohorts["effect"], label, "t1w")
        assert t1w_drop[in_planted].mean() > 100 and abs(t1w_drop[in_others].mean()) < 10
    # planted loss relative to the subject's GM there: 0.18 / (1 - 0.2 + regional variation)
    expected = SPEC.planted_loss / (1 - SPEC.gm_baseline_loss)
    assert np.mean(relative_losses) == pytest.approx(expected, rel=0.25)


def test_group_difference_measured_on_images(cohorts) -> None:
    """Regional GM over brain volume, from the images: MDD < HC with d = 3, no shift with d = 0."""
    atlas = load_aal2()
    planted = [i for idx in atlas.indices_of(SPEC.regions).values() for i in idx]
    table = participants(cohorts["effect"])
    fractions = {}
    for name, root in cohorts.items():
        values = []
        for subject in table["participant_id"]:
            label = subject.removeprefix("sub-")
            gm, labels = load(root, label, "gm"), load(root, label, "labels")
            values.append(gm[np.isin(labels, planted)].sum() / load(root, label, "brain").sum())
        fractions[name] = np.array(values)
    mdd = (table["group"] == "MDD").to_numpy()
    assert np.array_equal(fractions["null"][~mdd], fractions["effect"][~mdd])
    assert np.all(fractions["effect"][mdd] < 0.9 * fractions["null"][mdd])
    standardized_gap = {name: (f[~mdd].mean() - f[mdd].mean()) / f[~mdd].std(ddof=1)
                        for name, f in fractions.items()}
    assert standardized_gap["effect"] > standardized_gap["null"] + 2
    truth = json.loads((cohorts["effect"] / "ground_truth.json").read_text())
    null_truth = json.loads((cohorts["null"] / "ground_truth.json").read_text())
    for region in SPEC.regions:  # each region's d moves by about the planted 3
        shift = (truth["measured_cohens_d"][region] - null_truth["measured_cohens_d"][region])
        assert 1.5 < shift < 4.5, region


def test_null_effect_plants_nothing() -> None:
    spec = replace(SPEC, effect_size=0.0)
    z = {2101: 0.5, 2102: 0.5, 8201: -1.0}
    mdd = SubjectDraw("001", "MDD", 30.0, "F", 1.0, z)
    hc = SubjectDraw("002", "HC", 30.0, "F", 1.0, z)
    assert regional_gm_scale(spec, mdd, {2101, 2102}) == regional_gm_scale(spec, hc, {2101, 2102})
    planted = regional_gm_scale(SPEC, mdd, {2101, 2102})
    assert planted[2101] == pytest.approx(0.8 + 0.06 * 0.5 - 0.18)
    assert planted[8201] == pytest.approx(0.8 - 0.06)


def test_factor_scores_follow_the_documented_model() -> None:
    spec = replace(SPEC, factor_noise_sd=0.0)
    mdd = SubjectDraw("001", "MDD", 30.0, "F", 1.0, {})
    relative = {f: 0.8 - 0.06 for f in FACTORS}  # one SD less GM than average in every anchor
    assert factor_scores(spec, mdd, relative) == {f: pytest.approx(1.0 + 0.6) for f in FACTORS}
    hc = SubjectDraw("002", "HC", 30.0, "F", 1.0, {})
    assert factor_scores(spec, hc, {f: 0.8 for f in FACTORS}) == {f: 0.0 for f in FACTORS}


def test_one_millimetre_and_skull_stripped(templateflow_home, tmp_path) -> None:
    spec = CohortSpec(n_mdd=1, n_hc=0, seed=5, resolution=1.0, skull_stripped=True)
    truth = generate_cohort(tmp_path / "c1", spec, n_jobs=1)
    image = nib.load(tmp_path / "c1/sub-001/anat/sub-001_T1w.nii.gz")
    assert image.shape == (224, 256, 224) and image.header.get_zooms() == (1.0, 1.0, 1.0)
    brain = load(tmp_path / "c1", "001", "brain")
    assert np.all(np.asarray(image.dataobj)[brain == 0] == 0)
    assert 900 < truth["subjects"][0]["brain_volume_ml"] < 2500


def test_cli_errors(templateflow_home, tmp_path, capsys) -> None:
    args = ["--n-mdd", "1", "--n-hc", "1", "--seed", "1", "--resolution", "4"]
    assert synth_main([str(tmp_path / "a"), *args, "--regions", "Nowhere"]) == 64
    assert "region 'Nowhere' is not an AAL2 label" in capsys.readouterr().err
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "keep.txt").write_text("mine")
    assert synth_main([str(tmp_path / "b"), *args]) == 64
    assert "is not an empty folder" in capsys.readouterr().err
    assert (tmp_path / "b" / "keep.txt").read_text() == "mine"
    assert synth_main([str(tmp_path / "c"), "--n-mdd", "0", "--n-hc", "0", "--seed", "1"]) == 64


def test_missing_template_fails_fast_offline(tmp_path) -> None:
    env = {**os.environ, "TEMPLATEFLOW_HOME": str(tmp_path / "empty-templateflow")}
    exe = Path(sys.executable).with_name("bids_mdd-synth")
    out = subprocess.run([str(exe), str(tmp_path / "c"), "--n-mdd", "1", "--n-hc", "1",
                          "--seed", "1"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 66
    assert "TEMPLATEFLOW_HOME" in out.stderr and "tpl-MNI152NLin2009cAsym" in out.stderr
    assert not (tmp_path / "c").exists()


def test_head_sizes_are_adult(cohorts) -> None:
    """Brain volumes (TIV) centred on adults' (~1.55 L men, ~1.38 L women), inside the
    participant QC's plausible 1.0-2.0 L (the template-sized heads were 2.0-2.3 L). Seed 3
    draws 1.35-1.97 L."""
    truth = json.loads((cohorts["null"] / "ground_truth.json").read_text())["subjects"]
    volumes = {sex: [s["brain_volume_ml"] for s in truth if s["sex"] == sex] for sex in "MF"}
    every = volumes["M"] + volumes["F"]
    assert 1250 < np.mean(every) < 1650 and 1000 < min(every) and max(every) < 2000, volumes
    if volumes["M"] and volumes["F"]:
        assert np.mean(volumes["M"]) > np.mean(volumes["F"])
