"""The run itself under attack: a disk that fills up or turns read-only while the derivatives
are written, and the noise a run must not print. Each case: the exit code, one line per
failure, the input byte-identical, and a rerun that completes. (SIGTERM and SIGINT mid-run:
test_participant.py, against its uninterrupted deterministic run.)"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_bad_inputs import checksums

from bids_mdd.bids.discovery import T1wInput
from bids_mdd.participant.preprocessing import missing_outputs
from bids_mdd.synth.cohort import generate_cohort
from bids_mdd.synth.model import CohortSpec
from conftest import CRASH_AT

LABELS = ("001", "002")


@pytest.fixture(scope="module")
def dataset(templateflow_home, tmp_path_factory) -> Path:
    """1 MDD + 1 HC, SYNTHETIC, skull-stripped, 4 mm."""
    bids = tmp_path_factory.mktemp("run_attacks") / "bids"
    generate_cohort(bids, CohortSpec(n_mdd=1, n_hc=1, seed=7, resolution=4.0,
                                     skull_stripped=True), n_jobs=1)
    return bids


def _args(bids: Path, out: Path, work: Path, *extra: str) -> list[str]:
    return [str(bids), str(out), "participant", "-w", str(work), "--sloppy", "--preproc-only",
            "--skip-bids-validation", "--nprocs", "2", *extra]


def _start(args: list[str], point: str, action: str) -> subprocess.Popen:
    """bids_mdd in its own session, with ``action`` at ``point`` (tests/crash_at.py)."""
    return subprocess.Popen([sys.executable, str(CRASH_AT), point, *args],
                            env={**os.environ, "CRASH_AT_ACTION": action},
                            start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _rerun(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bids_mdd.cli.run", *args],
                          capture_output=True, text=True, timeout=900)


def _lines(stderr: str, prefix: str = "bids_mdd:") -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(prefix)]


def _t1ws(bids: Path) -> list[T1wInput]:
    return [T1wInput(bids / f"sub-{label}" / "anat" / f"sub-{label}_T1w.nii.gz", label, None,
                     {}) for label in LABELS]


def _mount(target: Path, size: str) -> None:
    target.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}",
                                            "tmpfs", str(target)]).returncode:
        pytest.skip("a disk that fills up or turns read-only needs a tmpfs mount (root)")


@pytest.mark.parametrize("action, cause, fix", [
    ("fill", "No space left on device", "free disk space"),
    ("readonly", "Read-only file system", "choose a writable -w / OUTPUT_DIR")])
def test_disk_full_or_read_only_while_writing_derivatives_exits_73(dataset, tmp_path, action,
                                                                   cause, fix) -> None:
    """The file system of OUTPUT_DIR fills up (two participants) or is remounted read-only
    (one) just before the first participant's third derivative is written: exit 73, each T1w
    named by one failed line with the cause and the fix, no traceback; once space is back, a
    rerun completes."""
    mount = tmp_path / "disk"
    _mount(mount, "120m")
    labels = LABELS if action == "fill" else LABELS[:1]
    try:
        out, work, before = mount / "out", tmp_path / "work", checksums(dataset)
        args = _args(dataset, out, work, "--participant-label", *labels)
        run = _start(args, "writing", f"{action}:{mount}")
        _, stderr = run.communicate(timeout=900)
        assert run.returncode == 73, stderr[-3000:]
        failed = _lines(stderr, "bids_mdd: failed:")
        assert [sum(f"sub-{label}_T1w" in line for line in failed) for label in labels] == \
            [1] * len(labels)
        assert all(cause in line and fix in line for line in failed), failed
        assert "Traceback" not in stderr and checksums(dataset) == before
        # no library noise from the steps that ran: ITK's "NIftI units are 'unknown'" on T1w
        # without NIfTI units (the synthetic ones have none), nilearn's cast warnings
        assert "NIftI" not in stderr and "Warning" not in stderr, stderr[-3000:]
        assert all(missing_outputs(out, t1w) for t1w in _t1ws(dataset)[:len(labels)])
        if action == "readonly":  # the rerun is the disk-full case's
            return
        (mount / "filler").unlink()
        rerun = _rerun(args)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert [missing_outputs(out, t1w) for t1w in _t1ws(dataset)] == [[], []]
        assert not (out / "logs" / "crash-subject-001.txt").exists()  # it succeeded now
    finally:
        subprocess.run(["umount", "-l", str(mount)])


def test_help_says_each_default_once() -> None:
    for command in ("bids_mdd.cli.run", "bids_mdd.cli.synth", "bids_mdd.cli.train",
                    "bids_mdd.cli.slurm"):
        text = subprocess.run([sys.executable, "-m", command, "--help"], capture_output=True,
                              text=True, check=True).stdout
        flat = " ".join(text.split())
        assert "(default: None)" not in flat and "(default: False)" not in flat, command
        assert not re.search(r"\(default: [^)]*\) \(default:", flat), command
    run_help = " ".join(subprocess.run([sys.executable, "-m", "bids_mdd.cli.run", "--help"],
                                       capture_output=True, text=True).stdout.split())
    assert "(default: all)" in run_help  # a default the help states itself stays
