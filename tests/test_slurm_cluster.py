"""bids_mdd-slurm on a real one-node SLURM (slurm-wlm + munge, started by the test): an array of
3 SYNTHETIC participants and the dependent group job; then a task killed and rerun through
submit.sh INDICES, whose outputs equal the uninterrupted run's."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bids_mdd.cli.slurm import main as slurm_main
from bids_mdd.synth.cohort import CohortSpec, generate_cohort
from slurm_cluster import job_times, missing, slurm_cluster

WAIT_S = 900


def _submit(job_dir: Path, env: dict[str, str], *indices: str) -> tuple[str, str]:
    printed = subprocess.run(["bash", str(job_dir / "submit.sh"), *indices], env=env,
                             capture_output=True, text=True, check=True).stdout
    words = printed.replace(",", "").split()  # "participant array 12, group job 13"
    return words[2], words[5]


def _wait(env: dict[str, str], until, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not until():
        assert time.monotonic() < deadline, f"{what} did not happen within {WAIT_S} s"
        time.sleep(2)


def _queue_empty(env: dict[str, str]) -> bool:
    return not subprocess.run(["squeue", "-h"], env=env, capture_output=True,
                              text=True).stdout.strip()


def _digests(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*.nii.gz"))}


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, str]]:
    why = missing()
    if why:
        pytest.skip(f"no SLURM here: {why}")
    # not under pytest's folders: they are private to root, and munged runs as munge
    root = Path(tempfile.mkdtemp(prefix="bids_mdd-slurm-"))
    try:
        with slurm_cluster(root) as env:
            yield env
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_array_then_group_and_recovery(cluster, templateflow_home, tmp_path) -> None:
    env = {**cluster, "PATH": f"{Path(sys.executable).parent}:{cluster['PATH']}"}
    bids = tmp_path / "bids"
    generate_cohort(bids, CohortSpec(n_mdd=2, n_hc=1, seed=5, resolution=4.0), n_jobs=2)
    common = ["--cpus", "1", "--mem-gb", "3", "--time", "00:30:00",
              "--participant-args=--sloppy --deterministic"]

    # uninterrupted: 3 tasks (2 at once on 2 CPUs), then the group job
    assert slurm_main([str(bids), str(tmp_path / "outA"), str(tmp_path / "jobsA"),
                       *common]) == 0
    array, group = _submit(tmp_path / "jobsA", env)
    _wait(env, lambda: _queue_empty(env), "the array and the group job")
    tasks = [job_times(f"{array}_{i}", env) for i in range(3)]
    assert [t["JobState"] for t in tasks] == ["COMPLETED"] * 3, tasks
    grouped = job_times(group, env)
    assert grouped["JobState"] == "COMPLETED", grouped
    assert grouped["StartTime"] >= max(t["EndTime"] for t in tasks)  # afterok
    out = tmp_path / "outA"
    for label in ("001", "002", "003"):
        assert (out / f"sub-{label}" / "anat" / f"sub-{label}_predictions.tsv").is_file()
    assert (out / "group" / "group.html").is_file()
    assert not [p for p in out.rglob("*") if p.name.startswith(".bids_mdd-tmp")]

    # task 1 killed after its registration: the group job never starts; rerun task 1 only
    assert slurm_main([str(bids), str(tmp_path / "outB"), str(tmp_path / "jobsB"),
                       *common]) == 0
    array, group = _submit(tmp_path / "jobsB", env)
    register = (tmp_path / "jobsB" / "work" / "sub-002" / "bids_mdd_wf" /
                "anat_preproc_subject002" / "register")
    _wait(env, lambda: list(register.glob("result_*.pklz")), "task 1's registration")
    subprocess.run(["scancel", "--signal=KILL", f"{array}_1"], env=env, check=True)
    _wait(env, lambda: "DependencyNeverSatisfied" in subprocess.run(
        ["squeue", "-h", "-j", group, "-o", "%r"], env=env, capture_output=True,
        text=True).stdout, "the group job's dependency failing")
    subprocess.run(["scancel", group], env=env, check=True)
    stamp = next(register.glob("result_*.pklz")).stat().st_mtime_ns
    _submit(tmp_path / "jobsB", env, "1")
    _wait(env, lambda: _queue_empty(env), "the rerun and the group job")
    assert next(register.glob("result_*.pklz")).stat().st_mtime_ns == stamp  # not recomputed
    assert _digests(tmp_path / "outB") == _digests(out)  # participant and group images
    assert len(_digests(out)) > 3 * 14
