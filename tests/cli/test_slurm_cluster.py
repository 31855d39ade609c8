"""bids_mdd-slurm on a real one-node SLURM (slurm-wlm + munge, started by the test): an array of
3 SYNTHETIC participants, two at once into one OUTPUT_DIR, and the dependent group job; then the
one participant again through the Apptainer branch of the job scripts (a stand-in
``apptainer`` that runs this bids_mdd with a clean environment), killed and rerun through
submit.sh INDICES, then the group job: the outputs equal the uninterrupted run's."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bids_mdd.bids.validation import run_validator
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


def _stand_in_apptainer(folder: Path, templateflow_home: Path) -> Path:
    """``apptainer run --cleanenv -B BINDS IMAGE ARGS``: checks the call and that every bind
    source exists (as apptainer does), records the binds, runs bids_mdd with a clean
    environment holding only what the image sets."""
    folder.mkdir()
    fake = folder / "apptainer"
    fake.write_text(f"""#!/bin/bash
set -eu
[[ $1 == run && $2 == --cleanenv && $3 == -B && -f $5 ]] || {{ echo "bad call: $*" >&2; exit 255; }}
IFS=, read -ra binds <<< "$4"
for bind in "${{binds[@]}}"; do
    [[ -d ${{bind%%:*}} ]] || {{ echo "bind source ${{bind%%:*}} does not exist" >&2; exit 255; }}
done
echo "$4" >> {folder}/binds.txt
shift 5
exec env -i HOME=/tmp PATH={Path(sys.executable).parent}:/usr/bin:/bin \\
    TEMPLATEFLOW_HOME={templateflow_home} bids_mdd "$@"
""")
    fake.chmod(0o755)
    return folder / "binds.txt"


def _overlap(first: dict[str, str], second: dict[str, str]) -> bool:
    return max(first["StartTime"], second["StartTime"]) < min(first["EndTime"],
                                                               second["EndTime"])


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
              "--participant-args=--sloppy --deterministic --models demo"]

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
    # two tasks wrote into one OUTPUT_DIR at once: still a valid dataset, nothing half-written
    assert _overlap(tasks[0], tasks[1]), tasks
    out = tmp_path / "outA"
    for label in ("001", "002", "003"):
        assert (out / f"sub-{label}" / "anat" / f"sub-{label}_predictions.tsv").is_file()
    assert (out / "group" / "group.html").is_file()
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert description["GeneratedBy"][0]["Name"] == "bids_mdd"
    assert not [p for p in out.rglob("*") if p.name.startswith(".bids_mdd-tmp")]
    assert run_validator(out) == []  # the official validator: no error

    # through the Apptainer branch, task 1 alone (participants 001 and 003 as run A left
    # them) killed after its registration: the group job never starts; rerun task 1 only
    image = tmp_path / "bids_mdd.sif"
    image.write_bytes(b"stand-in image")
    binds = _stand_in_apptainer(tmp_path / "bin", templateflow_home)
    env["PATH"] = f"{binds.parent}:{env['PATH']}"
    out_b = tmp_path / "outB"
    shutil.copytree(out, out_b, ignore=shutil.ignore_patterns("*sub-002*", "group"))
    assert slurm_main([str(bids), str(out_b), str(tmp_path / "jobsB"),
                       "--image", str(image), *common]) == 0
    array, group = _submit(tmp_path / "jobsB", env, "1")
    register = (tmp_path / "jobsB" / "work" / "sub-002" / "bids_mdd_wf" /
                "anat_preproc_subject002" / "register")
    _wait(env, lambda: list(register.glob("result_*.pklz")), "task 1's registration")
    subprocess.run(["scancel", "--signal=KILL", f"{array}_1"], env=env, check=True)
    _wait(env, lambda: "DependencyNeverSatisfied" in subprocess.run(
        ["squeue", "-h", "-j", group, "-o", "%r"], env=env, capture_output=True,
        text=True).stdout, "the group job's dependency failing")
    subprocess.run(["scancel", group], env=env, check=True)
    stamp = next(register.glob("result_*.pklz")).stat().st_mtime_ns
    _, group = _submit(tmp_path / "jobsB", env, "1")
    _wait(env, lambda: _queue_empty(env), "the rerun and the group job")
    assert next(register.glob("result_*.pklz")).stat().st_mtime_ns == stamp  # not recomputed
    assert job_times(group, env)["JobState"] == "COMPLETED"
    assert _digests(out_b) == _digests(out)  # participant 002's and the group's recomputed
    assert len(_digests(out)) > 3 * 14
    # task 1, its rerun and the group job; the input always read-only
    bound = binds.read_text().splitlines()
    prefix = f"{bids}:{bids}:ro,{out_b},{tmp_path / 'jobsB' / 'work'}/"
    assert all(line.startswith(prefix) for line in bound), bound
    assert sorted(line[len(prefix):] for line in bound) == ["group", "sub-002", "sub-002"]
