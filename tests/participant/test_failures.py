"""One-line failure messages: the root cause of a crash file, the fix when the cause is not
the data's, the crash files the group report links."""

from __future__ import annotations

from pathlib import Path

import pytest

from bids_mdd.bids.discovery import T1wInput
from bids_mdd.bids.names import crash_name
from bids_mdd.errors import ExitCode
from bids_mdd.participant.failures import exit_code_for, fix_for, node_failure, root_cause

pytestmark = pytest.mark.unit  # make test-fast

#: The end of a nipype crash file whose node read a sheared image with ANTs (the ITK lines as
#: antspyx 0.6 prints them; nipype's own wrapper first).
ITK_CRASH = """Node: bids_mdd_wf.anat_preproc_subject01.register
Working directory: /work/bids_mdd_wf/anat_preproc_subject01/register

Node inputs:

in_file = /work/t1w_n4.nii.gz

Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/nipype/pipeline/plugins/multiproc.py", line 67, in run_node
    result["result"] = node.run(updatehash=updatehash)
nipype.pipeline.engine.nodes.NodeExecutionError: Exception raised while executing Node register.

Traceback:
\tTraceback (most recent call last):
\t  File "/venv/lib/python3.11/site-packages/ants/core/ants_image_io.py", line 249, in image_header_info
\t    retval = libfn(filename)
\tRuntimeError: /project/itksource/Modules/IO/NIFTI/src/itkNiftiImageIO.cxx:2135:
\tITK ERROR: ITK only supports orthonormal direction cosines.  No orthonormal definition found!
"""


def test_root_cause_is_the_itk_error_not_the_source_location() -> None:
    assert root_cause(ITK_CRASH) == ("ITK: ITK only supports orthonormal direction cosines. No "
                                     "orthonormal definition found!")


def test_root_cause_skips_wrappers_and_joins_a_location_only_message() -> None:
    nested = ("Traceback (most recent call last):\n  File 'x.py', line 1\n"
              "ValueError: the image has 3 axes\n\nDuring handling ...\n"
              "nipype.pipeline.engine.nodes.NodeExecutionError: Exception raised while "
              "executing Node segment.\n")
    assert root_cause(nested) == "ValueError: the image has 3 axes"
    assert root_cause("RuntimeError: /src/antsRegistration.cxx:12:\nbad transform\n") == (
        "RuntimeError: /src/antsRegistration.cxx:12: bad transform")
    assert root_cause("something odd happened\n") == "something odd happened"


def test_causes_outside_the_data_get_their_fix() -> None:
    cause = root_cause("OSError: [Errno 28] No space left on device: '/work/x.nii.gz'\n")
    assert cause == "OSError: [Errno 28] No space left on device: '/work/x.nii.gz'"
    assert fix_for(cause).startswith("free disk space (or choose another -w / OUTPUT_DIR)")
    assert fix_for("OSError: [Errno 30] Read-only file system: '/out'") == (
        "choose a writable -w / OUTPUT_DIR")
    assert fix_for("ValueError: the image has 3 axes") == ""


def test_node_failure_is_one_line_and_leaves_the_linked_crash_file(tmp_path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    crash = logs / "crash-20261202-101010-root-register-abc.txt"
    crash.write_text(ITK_CRASH)
    t1w = T1wInput(path=Path("/data/sub-01/anat/sub-01_T1w.nii.gz"), subject="01")
    failure = node_failure(t1w, crash, logs)
    assert failure.reason == (
        "/data/sub-01/anat/sub-01_T1w.nii.gz: preprocessing failed in step register: ITK: ITK "
        "only supports orthonormal direction cosines. No orthonormal definition found!; crash "
        f"file: {crash}")
    own = logs / crash_name(t1w.output_entities())
    assert own.read_text().startswith(failure.reason + "\n\nNode: bids_mdd_wf.")


def test_our_own_check_inside_a_step_is_bad_data(tmp_path) -> None:
    """The segmentation refusing noise inside its node: exit 65 when it is the only input, as
    for the checks before any work; an ANTs crash stays a failure (1)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    crash = logs / "crash-20261202-101010-root-segment-abc.txt"
    crash.write_text("Node: bids_mdd_wf.anat_preproc_subjectnoise.segment\n\nTraceback (most "
                     "recent call last):\nbids_mdd.errors.BidsMddError: tissue classes without "
                     "distinct T1w intensities (CSF < GM < WM expected, means 302.1, 296.7, "
                     "298.1): not a T1w brain image (noise, another contrast?); check the "
                     "image\n")
    t1w = T1wInput(path=Path("/data/sub-noise/anat/sub-noise_T1w.nii.gz"), subject="noise")
    failure = node_failure(t1w, crash, logs)
    assert failure.reason.startswith(f"{t1w.path}: preprocessing failed in step segment: "
                                     "tissue classes without distinct T1w intensities")
    assert failure.exit_code == ExitCode.BAD_DATA
    assert exit_code_for([failure], 1) == ExitCode.BAD_DATA == 65
    assert exit_code_for([failure], 2) == ExitCode.FAILURE
    itk = logs / "crash-20261202-101011-root-register-def.txt"
    itk.write_text(ITK_CRASH)
    assert node_failure(t1w, itk, logs).exit_code == ExitCode.FAILURE


def test_a_rerun_that_succeeds_removes_the_earlier_crash_files_of_that_t1w_only(tmp_path):
    """Its own crash file and nipype's of its nodes go; another participant's (whose workflow
    name starts alike) stay."""
    from bids_mdd.participant.runner import _remove_old_crash

    def t1w(label: str) -> T1wInput:
        return T1wInput(tmp_path / f"sub-{label}_T1w.nii.gz", label, None,
                        {"subject": label, "suffix": "T1w", "extension": ".nii.gz"})

    logs = tmp_path / "out" / "logs"
    logs.mkdir(parents=True)
    own = logs / crash_name(t1w("001").output_entities())
    own.write_text("sub-001_T1w.nii.gz: preprocessing failed in step segment\n")
    nodes = {"001": logs / "crash-20261207-101010-root-segment-aaaa.txt",
             "0011": logs / "crash-20261207-101011-root-segment-bbbb.txt"}
    for label, crash in nodes.items():
        crash.write_text(f"Node: bids_mdd_wf.anat_preproc_subject{label}.segment\n"
                         "Working directory: /w\n")
    other = logs / crash_name(t1w("0011").output_entities())
    other.write_text("failed\n")
    _remove_old_crash(tmp_path / "out", t1w("001"))
    assert sorted(p.name for p in logs.iterdir()) == sorted([nodes["0011"].name, other.name])
