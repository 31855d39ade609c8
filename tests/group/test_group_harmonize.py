"""``bids_mdd BIDS OUT group --harmonize site`` on SYNTHETIC multi-site cohorts whose sites are
confounded with diagnosis: site variance removed, the planted regions found, nothing found in
a null cohort, and the errors of a site column ComBat cannot use."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_group_level import GROUP, group_file, image, run_group

from bids_mdd.atlas import atlas_labels_on_grid, load_aal2
from bids_mdd.errors import ExitCode
from bids_mdd.spaces.grids import CLASSIFIER_GRID
from bids_mdd.synth.cohort import generate_cohort
from bids_mdd.synth.mni import MNI_DIR
from bids_mdd.synth.model import CohortSpec

SPEC = CohortSpec(n_mdd=16, n_hc=16, seed=21, effect_size=1.0, resolution=4.0,
                  skull_stripped=True, mni_derivatives=True, mni_t1w=False, n_sites=4)


def _as_participant_level(bids: Path, out: Path) -> Path:
    shutil.copytree(bids / MNI_DIR, out)
    (out / "dataset_description.json").unlink()
    return out


@pytest.fixture(scope="module")
def cohorts(templateflow_home, tmp_path_factory) -> dict[str, Path]:
    """The confounded 4-site cohort with its planted effect, and the same without an effect."""
    root = tmp_path_factory.mktemp("multisite")
    generate_cohort(root / "effect", SPEC, n_jobs=2)
    generate_cohort(root / "null", replace(SPEC, effect_size=0.0), n_jobs=2)
    return {name: root / name for name in ("effect", "null")}


def _fdr(out: Path) -> np.ndarray:
    return image(group_file(out, **GROUP, desc="FDR", suffix="mask")) > 0


def _parameters(out: Path) -> dict:
    path = group_file(out, **GROUP, stat="t", suffix="statmap", extension=".json")
    return json.loads(path.read_text())["Parameters"]


def test_combat_removes_site_variance_and_keeps_the_planted_effect(cohorts, tmp_path) -> None:
    bids = cohorts["effect"]
    plain = _as_participant_level(bids, tmp_path / "plain")
    combat = _as_participant_level(bids, tmp_path / "combat")
    assert run_group(bids, plain) == 0
    assert run_group(bids, combat, "--harmonize", "site") == 0
    parameters = _parameters(combat)
    chance = 3 / (SPEC.n_mdd + SPEC.n_hc - 1)
    assert parameters["SiteVarianceExplainedBefore"] > 2 * chance
    assert parameters["SiteVarianceExplainedAfter"] < 1.1 * chance
    assert parameters["HarmonizationColumn"] == "site"
    assert parameters["HarmonizationPreserved"] == ["MDD", "sex", "age", "TIV"]
    assert "without empirical Bayes" in parameters["Harmonization"]
    assert sum(parameters["HarmonizationSites"].values()) == 32
    assert [name for name in parameters["Design"] if name.startswith("site")]  # site stays
    assert "HarmonizationColumn" not in _parameters(plain)

    truth = json.loads((bids / "ground_truth.json").read_text())
    atlas = load_aal2()
    labels = atlas_labels_on_grid(CLASSIFIER_GRID.affine, CLASSIFIER_GRID.shape)
    planted = np.isin(labels, [i for idx in atlas.indices_of(truth["spec"]["regions"]).values()
                               for i in idx])
    found, missed = _fdr(combat), _fdr(plain)
    # site variance hides the planted effect; harmonised, most FDR voxels are in its regions
    assert found[planted].sum() > 10 * max(1, missed[planted].sum())
    assert found[planted].sum() > 0.5 * found.sum()
    report = (combat / "group" / "group.html").read_text()
    assert "Site harmonisation (site)" in report and "ComBat (neuroCombat" in report
    assert "Site stayed in the model as a covariate" in report


def test_null_multisite_cohort_finds_nothing_with_combat(cohorts, tmp_path) -> None:
    bids = cohorts["null"]
    out = _as_participant_level(bids, tmp_path / "out")
    assert run_group(bids, out, "--harmonize", "site") == 0
    assert _fdr(out).sum() == 0
    assert _parameters(out)["SiteVarianceExplainedAfter"] < _parameters(out)[
        "SiteVarianceExplainedBefore"] / 2


def test_a_site_column_combat_cannot_use_is_one_line(cohorts, tmp_path, capsys) -> None:
    bids = tmp_path / "bids"
    shutil.copytree(cohorts["effect"], bids, copy_function=os.link)
    out = _as_participant_level(bids, tmp_path / "out")
    original = pd.read_csv(bids / "participants.tsv", sep="\t")

    def rewrite(table: pd.DataFrame) -> None:
        (bids / "participants.tsv").unlink()  # a hard link: never write through it
        table.to_csv(bids / "participants.tsv", sep="\t", index=False)

    cases = [
        (original, ["--harmonize", "scanner"], ExitCode.USAGE, "no site column 'scanner'"),
        (original.assign(site=["lonely", *original["site"][1:]]), ["--harmonize", "site"],
         ExitCode.BAD_DATA, "at least 2 participants per site: lonely has 1"),
        (original.assign(site=original["site"].where(original.index != 3)),
         ["--harmonize", "site"], ExitCode.BAD_DATA, "is n/a for sub-004"),
        (original.assign(site=original["group"]), ["--harmonize", "site"], ExitCode.BAD_DATA,
         "cannot be told apart"),
    ]
    for table, extra, code, message in cases:
        rewrite(table)
        capsys.readouterr()
        assert run_group(bids, out, *extra) == code
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
        assert not (out / "group").exists()  # refused before any write
