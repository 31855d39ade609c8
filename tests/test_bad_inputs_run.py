"""The run itself under attack: a disk that fills up or turns read-only while the derivatives
are written, SIGTERM and SIGINT mid-run, and the noise a run must not print. Each case: the
exit code, one line per failure, the input byte-identical, and a rerun that completes (and,
after a signal, is byte-identical to an uninterrupted run under --deterministic)."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bids_mdd.bids.discovery import T1wInput
from bids_mdd.bids.names import in_progress_path
from bids_mdd.participant.preprocessing import missing_outputs
from bids_mdd.synth.cohort import generate_cohort
from bids_mdd.synth.model import CohortSpec
from test_bad_inputs import checksums

CRASH_AT = Path(__file__).with_name("crash_at.py")
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


def _digests(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*.nii.gz"))}


def _group_alive(pgid: int) -> list[str]:
    """The processes of process group ``pgid`` still alive (zombies are not)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append((stat.parent / "cmdline").read_text().replace("\0", " ")[:120])
    return alive


@pytest.fixture(scope="module")
def uninterrupted(dataset, tmp_path_factory) -> dict:
    """An uninterrupted --deterministic run: its NIfTIs' digests and its stderr."""
    root = tmp_path_factory.mktemp("uninterrupted")
    done = _rerun(_args(dataset, root / "out", root / "work", "--deterministic"))
    assert done.returncode == 0, done.stderr[-3000:]
    return {"digests": _digests(root / "out"), "stderr": done.stderr}


@pytest.mark.parametrize("signum, to_group", [(signal.SIGTERM, False), (signal.SIGINT, True)])
def test_signal_mid_run_stops_every_worker_and_the_rerun_is_byte_identical(
        dataset, uninterrupted, tmp_path, signum, to_group) -> None:
    """SIGTERM to the main process (kill, timeout, SLURM) or SIGINT to the process group
    (Ctrl-C) while a registration runs in a worker: one "interrupted" line, exit 128 + the
    signal, no traceback, no process of the run alive 10 s later, the participants still
    marked in progress; after SIGTERM, the rerun completes with the uninterrupted run's
    bytes."""
    out, work = tmp_path / "out", tmp_path / "work"
    args = _args(dataset, out, work, "--deterministic")
    marker = tmp_path / "registering"
    run = _start(args, "registration", f"mark:{marker}")
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()[1][-3000:]
        time.sleep(0.1)
    (os.killpg if to_group else os.kill)(run.pid, signum)
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 128 + signum, stderr[-3000:]
    lines = _lines(stderr)
    assert len(lines) == 1 and lines[0].startswith(
        f"bids_mdd: interrupted by {signal.Signals(signum).name}"), lines
    assert "rerun the same command to resume" in lines[0]
    assert "Traceback" not in stderr, stderr[-3000:]
    time.sleep(10)
    assert _group_alive(run.pid) == []
    assert all(in_progress_path(out, label).is_file() for label in LABELS)
    if signum == signal.SIGINT:  # the rerun is the SIGTERM case's
        return
    rerun = _rerun(args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert _digests(out) == uninterrupted["digests"]
    assert not any(in_progress_path(out, label).exists() for label in LABELS)


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


def test_a_run_prints_no_library_noise(uninterrupted) -> None:
    """No ITK "NIftI units are 'unknown'" lines and no Python warnings from the libraries on
    T1w without NIfTI units (the synthetic ones have none)."""
    stderr = uninterrupted["stderr"]
    assert "NIftI" not in stderr and "Warning:" not in stderr, stderr[-3000:]
    assert "UserWarning" not in stderr and "Traceback" not in stderr, stderr[-3000:]
