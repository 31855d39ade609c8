"""The input dataset through the official BIDS validator (bids-validator-deno): exit 16 with a
one-line summary, --skip-bids-validation to go on anyway."""

from __future__ import annotations

import shutil

import pytest

from bids_mdd.bids.validation import summarize_errors, validate_dataset
from bids_mdd.cli.run import main
from bids_mdd.errors import BidsMddError, ExitCode
from bids_mdd.synth.cohort import CohortSpec, generate_cohort


def test_real_dataset_error_is_named_in_one_line(real_bids, tmp_path, capsys) -> None:
    """ds002748 declares gender levels M/F in participants.json but writes m/f in the TSV."""
    bids = tmp_path / "bids"
    shutil.copytree(real_bids, bids, ignore=shutil.ignore_patterns("sub-[1-9]*"))
    code = main([str(bids), str(tmp_path / "out"), "group"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == ExitCode.INVALID_BIDS == 16
    assert lines[-1] == (
        f"bids_mdd: error: {bids} is not valid BIDS (bids-validator-deno): 1 error(s): "
        "TSV_VALUE_INCORRECT_TYPE x1, first in /participants.tsv line 2 [gender]: 'm'; "
        "fix the dataset, or pass --skip-bids-validation")


def test_stray_files_are_counted_per_code(tiny_bids) -> None:
    (tiny_bids / "sub-03" / "anat" / "notes.txt").write_text("scanner notes")
    (tiny_bids / "sub-02" / "ses-1" / "anat" / "notes.txt").write_text("scanner notes")
    (tiny_bids / "scans.csv").write_text("a,b\n")
    with pytest.raises(BidsMddError) as raised:
        validate_dataset(tiny_bids)
    assert raised.value.exit_code == ExitCode.INVALID_BIDS
    message = str(raised.value)
    assert "3 error(s): NOT_INCLUDED x2, first in /sub-0" in message, message
    assert "EXTENSION_MISMATCH x1, first in /scans.csv" in message and "\n" not in message


def test_skip_bids_validation_goes_on(tiny_bids, tmp_path, capsys) -> None:
    (tiny_bids / "sub-03" / "anat" / "notes.txt").write_text("scanner notes")
    assert main([str(tiny_bids), str(tmp_path / "out"), "group"]) == 16
    capsys.readouterr()
    code = main([str(tiny_bids), str(tmp_path / "out"), "group", "--skip-bids-validation"])
    err = capsys.readouterr().err
    # past the validator, the group level stops where it should: no participant-level maps
    assert code == ExitCode.MISSING_INPUT == 66 and "not valid BIDS" not in err
    assert "has a GM map; run the participant level first" in err


def test_a_validator_that_cannot_run_is_named_as_such(tiny_bids, tmp_path, capsys,
                                                      monkeypatch) -> None:
    """A validator this user cannot execute (an install by another user, a noexec mount) is
    neither the dataset's fault nor the output folder's: the line says which file and how."""
    validator = tmp_path / "bids-validator-deno"
    validator.write_text("#!/bin/sh\n")
    validator.chmod(0o644)
    monkeypatch.setattr("bids_mdd.bids.validation.validator_executable", lambda: str(validator))
    code = main([str(tiny_bids), str(tmp_path / "out"), "group"])
    assert code == 16
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"bids_mdd: error: {validator}: the BIDS validator cannot be run (Permission denied); "
        "make it executable for this user (chmod a+rx), reinstall it, or pass "
        "--skip-bids-validation")


def test_synthetic_dataset_is_valid(templateflow_home, tmp_path) -> None:
    """bids_mdd-synth's datasets (with MNI-space derivatives) pass: ground_truth.json is in
    .bidsignore."""
    generate_cohort(tmp_path / "bids", CohortSpec(n_mdd=1, n_hc=1, seed=2, resolution=4.0,
                                                  mni_derivatives=True))
    validate_dataset(tmp_path / "bids")  # raises on any error
    assert (tmp_path / "bids" / ".bidsignore").read_text() == "ground_truth.json\n"


def test_summary_of_a_report() -> None:
    issues = [{"code": "NOT_INCLUDED", "severity": "error", "location": "/a.txt"},
              {"code": "NOT_INCLUDED", "severity": "error", "location": "/b.txt"},
              {"code": "NIFTI_UNIT", "severity": "warning", "location": "/c.nii.gz"}]
    assert summarize_errors(issues) == "2 error(s): NOT_INCLUDED x2, first in /a.txt"
