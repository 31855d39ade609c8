"""Bad inputs at the group level, run through the CLI on a SYNTHETIC cohort whose model inputs
are rendered in MNI space (no preprocessing): each case gets its exit code, its one line (an
error, or a warning), an input dataset left byte-identical, and outputs with nothing partial
or stale in them."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_bad_inputs import checksums

from bids_mdd.bids.names import derivative_path, sidecar_path
from bids_mdd.bids.outputs import OUTPUTS
from bids_mdd.cli.run import main
from bids_mdd.group.results import GroupResults
from bids_mdd.group.runner import _check_degrees_of_freedom
from bids_mdd.synth.cohort import generate_cohort
from bids_mdd.synth.mni import MNI_DIR
from bids_mdd.synth.model import CohortSpec

SPACE = {"space": "MNI152NLin2009cAsym", "res": "1p5"}
T_MAP = {**SPACE, "contrast": "MDDvsHC", "stat": "t", "suffix": "statmap"}
#: What a group run without permutations, predictions or attention maps writes under group/.
PLAIN_RUN = sorted(
    [f"group/figures/group_desc-{desc}.svg" for desc in ("tmapGlass", "tmapSlices")]
    + ["group/group.html"]
    + [f"group/{stem}.{ext}" for ext in ("json", "tsv")
       for stem in ("group_clusters", "group_desc-qc_metrics")]
    + [f"group/group_space-MNI152NLin2009cAsym_res-1p5_{entities}.{ext}"
       for ext in ("json", "nii.gz")
       for entities in ("contrast-MDDvsHC_desc-FDR_mask", "contrast-MDDvsHC_stat-effect_statmap",
                        "contrast-MDDvsHC_stat-t_statmap", "desc-GM_mask")])


@pytest.fixture(scope="module")
def cohort(templateflow_home, tmp_path_factory) -> Path:
    """SYNTHETIC: 3 MDD (sub-001 to 003) and 3 HC (sub-004 to 006) with GM maps and QC
    metrics rendered in MNI space, as the participant level writes them."""
    bids = tmp_path_factory.mktemp("group_bad_inputs") / "bids"
    generate_cohort(bids, CohortSpec(n_mdd=3, n_hc=3, seed=4, resolution=4.0,
                                     skull_stripped=True, mni_derivatives=True, mni_t1w=False),
                    n_jobs=1)
    return bids


def copies(cohort: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the dataset, and an output folder holding only its participant outputs."""
    bids, out = tmp_path / "bids", tmp_path / "out"
    shutil.copytree(cohort, bids, symlinks=True)
    shutil.copytree(bids / MNI_DIR, out)
    (out / "dataset_description.json").unlink()
    return bids, out


def run(caplog, bids: Path, out: Path, *extra: str) -> tuple[int, list[str], list[str]]:
    """The group level in this process: exit code, stderr's error lines, warning records."""
    caplog.clear()
    caplog.set_level(logging.INFO, logger="bids_mdd")
    code = main([str(bids), str(out), "group", "--skip-bids-validation", *extra])
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    return code, warnings, [r.getMessage() for r in caplog.records if r.levelname == "INFO"]


def errors(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines()
            if line.startswith("bids_mdd:")]


def group_outputs(out: Path) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in (out / "group").rglob("*")
                  if p.is_file())


def outside_group(out: Path) -> dict[str, str]:
    return {key: value for key, value in checksums(out).items()
            if key != "group" and not key.startswith("group/")}


def sidecar(out: Path, **entities) -> dict:
    return json.loads(sidecar_path(derivative_path(out, **entities)).read_text())


def test_rerun_with_fewer_outputs_removes_the_earlier_ones(cohort, tmp_path, caplog) -> None:
    """A run with cluster-mass permutations, then one without: the second's group outputs are
    exactly those of the same run in an empty folder, one INFO line names the removed ones,
    and the participants' outputs and a file of the user's under group/ stay."""
    bids, out = copies(cohort, tmp_path)
    before = checksums(bids)
    code, _, _ = run(caplog, bids, out, "--permutations", "5", "--permutation-inference",
                     "cluster")
    assert code == 0
    stale = sorted(set(group_outputs(out)) - set(PLAIN_RUN))
    assert stale == sorted(
        ["group/group_desc-ClusterMass_clusters.json", "group/group_desc-ClusterMass_clusters.tsv"]
        + [f"group/group_space-MNI152NLin2009cAsym_res-1p5_contrast-MDDvsHC_{e}.{ext}"
           for e in ("desc-ClusterMass_mask", "stat-logp_desc-ClusterMass_statmap")
           for ext in ("json", "nii.gz")])
    (out / "group" / "notes.txt").write_text("the user's own notes\n")
    (out / "group" / "figures" / "mine.svg").write_text("<svg/>\n")
    participants = outside_group(out)

    code, _, info = run(caplog, bids, out)
    assert code == 0
    assert (f"removed 6 group output(s) of an earlier run that this run did not make: "
            f"{', '.join(stale)}") in info
    assert group_outputs(out) == sorted(PLAIN_RUN + ["group/figures/mine.svg",
                                                     "group/notes.txt"])
    fresh = tmp_path / "fresh"
    shutil.copytree(bids / MNI_DIR, fresh)
    (fresh / "dataset_description.json").unlink()
    assert run(caplog, bids, fresh)[0] == 0
    assert group_outputs(fresh) == PLAIN_RUN
    assert outside_group(out) == participants  # participant outputs untouched
    assert (out / "group" / "notes.txt").read_text() == "the user's own notes\n"
    html = (out / "group" / "group.html").read_text()
    assert "ClusterMass, FWE" not in html and "removed 6 group output(s)" in html
    assert checksums(bids) == before


def test_missing_or_corrupt_qc_metrics_fail_the_qc_gate(cohort, tmp_path, caplog) -> None:
    """sub-002's QC metrics deleted, sub-005's cut short: one warning naming both files; both
    left out of the GLM and listed in the report; --include-qc-failures keeps them."""
    bids, out = copies(cohort, tmp_path)
    before = checksums(bids)
    missing = derivative_path(out, subject="002", **OUTPUTS["qc"])
    missing.unlink()
    corrupt = derivative_path(out, subject="005", **OUTPUTS["qc"])
    corrupt.write_text('{"tiv_ml": 15')
    code, warnings, _ = run(caplog, bids, out)
    assert code == 0
    line = ("2 participant(s) have no readable QC metrics, so the QC gate cannot pass them: "
            f"sub-002 (QC metrics {missing} is missing); sub-005 (QC metrics {corrupt} cannot "
            "be read as JSON (Expecting ',' delimiter: line 1 column 14 (char 13))); {}; rerun "
            "the participant level for them")
    assert line.format("left out (--include-qc-failures keeps them)") in warnings
    parameters = sidecar(out, **T_MAP)["Parameters"]
    assert (parameters["Participants"], parameters["MDD"], parameters["HC"]) == (4, 2, 2)
    sources = "".join(sidecar(out, **T_MAP)["Sources"])
    assert "sub-001" in sources and "sub-002" not in sources and "sub-005" not in sources
    html = (out / "group" / "group.html").read_text()
    assert "2 participant(s) failed the QC gate" in html
    assert f"QC metrics {missing} is missing" in html and f"QC metrics {corrupt} cannot" in html
    assert group_outputs(out) == PLAIN_RUN

    code, warnings, _ = run(caplog, bids, out, "--include-qc-failures")
    assert code == 0
    assert line.format("kept, as --include-qc-failures asks") in warnings
    assert sidecar(out, **T_MAP)["Parameters"]["Participants"] == 6
    assert "kept, as --include-qc-failures asks" in (out / "group" / "group.html").read_text()
    assert group_outputs(out) == PLAIN_RUN
    assert checksums(bids) == before


def _decimal_commas(rows: list[str], which: slice) -> list[str]:
    """The age column (the third) of the data rows in ``which`` written with a decimal comma."""
    edited = list(rows)
    for k in range(len(rows))[which]:
        fields = rows[k].split("\t")
        fields[2] = fields[2].replace(".", ",")
        edited[k] = "\t".join(fields)
    return edited


@pytest.mark.parametrize(("which", "extra", "line"), [
    (slice(1, None), [], 2),  # every age: the column reads as text
    (slice(1, None), ["--covariates", "age"], 2),
    (slice(3, 4), [], 4),  # one age among numbers
])
def test_decimal_comma_ages_exit_65(cohort, tmp_path, caplog, capsys, which, extra,
                                    line) -> None:
    bids, out = copies(cohort, tmp_path)
    table = bids / "participants.tsv"
    rows = table.read_text().splitlines()
    assert rows[0].split("\t")[2] == "age"
    edited = _decimal_commas(rows, which)
    table.write_text("\n".join(edited) + "\n")
    age = rows[line - 1].split("\t")[2]
    assert "," in edited[line - 1] and "." in age  # e.g. 35.7 written 35,7
    before, outputs = checksums(bids), checksums(out)
    capsys.readouterr()
    code, _, _ = run(caplog, bids, out, *extra)
    assert code == 65
    assert errors(capsys) == [
        f"bids_mdd: error: {table} line {line}: column 'age' holds numbers written with a "
        f"decimal comma ({age.replace('.', ',')!r}); use a decimal point ({age!r}) or n/a"]
    assert checksums(out) == outputs  # nothing written
    assert checksums(bids) == before


def test_label_header_with_a_stray_space_lists_the_columns(cohort, tmp_path, caplog,
                                                           capsys) -> None:
    bids, out = copies(cohort, tmp_path)
    table = bids / "participants.tsv"
    rows = table.read_text().splitlines()
    rows[0] = rows[0].replace("\tgroup\t", "\tgroup \t")
    table.write_text("\n".join(rows) + "\n")
    before, outputs = checksums(bids), checksums(out)
    capsys.readouterr()
    code, _, _ = run(caplog, bids, out)
    assert code == 64
    assert errors(capsys) == [
        f"bids_mdd: error: {table}: none of the columns group, diagnosis, dx, condition, label "
        "holds the diagnosis (columns: 'group ', 'age', 'sex', 'Anhedonia', 'Appetite', "
        "'Sleep', 'Suicidality', 'Anxiety'); rename 'group ' to 'group' in the header, or name "
        "the column with --label-column"]
    assert checksums(out) == outputs
    assert checksums(bids) == before


def test_one_mdd_two_hc_warns_of_one_residual_degree_of_freedom(cohort, tmp_path,
                                                                caplog) -> None:
    bids, out = copies(cohort, tmp_path)
    before = checksums(bids)
    code, warnings, _ = run(caplog, bids, out, "--participant-label", "001", "004", "005")
    assert code == 0
    line = ("voxelwise GLM: 1 MDD and 2 HC leave 1 residual degree(s) of freedom (3 "
            "participants, 2 design columns: intercept, MDD), fewer than 10: the t-map is "
            "unreliable; add participants or drop covariates (--covariates)")
    assert line in warnings
    assert sidecar(out, **T_MAP)["Parameters"]["DegreesOfFreedom"] == 1
    assert line in (out / "group" / "group.html").read_text()
    assert group_outputs(out) == PLAIN_RUN
    assert checksums(bids) == before


def test_degrees_of_freedom_warning_threshold(caplog) -> None:
    """9 residual degrees of freedom warn, 10 do not."""
    import pandas as pd

    caplog.set_level(logging.WARNING, logger="bids_mdd")
    warned = {}
    for n in (11, 12):
        caplog.clear()
        design = np.column_stack([np.ones(n), np.arange(n) % 2])
        table = pd.DataFrame({"MDD": np.arange(n) % 2})
        results = GroupResults(n_selected=n, missing=pd.DataFrame(), qc=pd.DataFrame())
        _check_degrees_of_freedom(design, ["intercept", "MDD"], table, results)
        assert [r.getMessage() for r in caplog.records] == results.notes
        warned[n] = results.notes
    assert warned[12] == [] and len(warned[11]) == 1
    assert warned[11][0].startswith("voxelwise GLM: 5 MDD and 6 HC leave 9 residual degree(s) "
                                    "of freedom (11 participants, 2 design columns")


def test_two_acquisitions_of_one_subject_name_the_one_used(cohort, tmp_path, caplog) -> None:
    """sub-001 has acq-mprage and acq-spgr T1w (SYNTHETIC; both processed, the spgr GM map a
    copy): a warning names the one used and the one left out; the GLM reads the one used."""
    bids, out = copies(cohort, tmp_path)
    anat = bids / "sub-001" / "anat"
    for suffix in (".nii.gz", ".json"):
        original = anat / f"sub-001_T1w{suffix}"
        shutil.copyfile(original, anat / f"sub-001_acq-spgr_T1w{suffix}")
        original.rename(anat / f"sub-001_acq-mprage_T1w{suffix}")
    for entities in (OUTPUTS["gm_smoothed"], OUTPUTS["qc"]):
        plain = derivative_path(out, subject="001", **entities)
        for acquisition in ("spgr", "mprage"):
            target = derivative_path(out, subject="001", acquisition=acquisition, **entities)
            shutil.copyfile(plain, target)
            if entities["suffix"] == "probseg":
                shutil.copyfile(sidecar_path(plain), sidecar_path(target))
        plain.unlink()
        sidecar_path(plain).unlink(missing_ok=True)
    before = checksums(bids)
    code, warnings, _ = run(caplog, bids, out)
    assert code == 0
    assert ("sub-001 has 2 T1w of the same session and run: the group level uses "
            "sub-001/anat/sub-001_acq-mprage_T1w.nii.gz (the first by name) and leaves out "
            "sub-001/anat/sub-001_acq-spgr_T1w.nii.gz; choose one with --bids-filter-file, "
            'e.g. {"t1w": {"acquisition": ["mprage", null]}}') in warnings
    sources = sidecar(out, **T_MAP)["Sources"]
    assert len(sources) == 6 and sum("sub-001_acq-mprage_" in s for s in sources) == 1
    assert not any("acq-spgr" in s for s in sources)
    assert group_outputs(out) == PLAIN_RUN
    assert checksums(bids) == before
