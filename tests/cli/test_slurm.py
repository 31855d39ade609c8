"""bids_mdd-slurm: the job folder, and the job scripts' command lines (no scheduler needed)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from bids_mdd.cli.slurm import main
from conftest import REPO

PACKAGE_SCRIPTS = REPO / "bids_mdd" / "data" / "slurm"


def _fake_bids_mdd(folder: Path) -> Path:
    """A stand-in for bids_mdd that records its arguments, one per line."""
    fake = folder / "fake_bids_mdd"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$RECORD"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    return fake


def test_job_folder_and_what_each_task_runs(tiny_bids, tmp_path, capsys) -> None:
    jobs = tmp_path / "jobs with space"
    code = main([str(tiny_bids), str(tmp_path / "out"), str(jobs), "--cpus", "2", "--mem-gb",
                 "3", "--max-parallel", "2", "--participant-args", "--sloppy --seed 7"])
    assert code == 0, capsys.readouterr().err
    assert (jobs / "participants.txt").read_text() == "01\n02\n03\n"
    for name in ("participant.sbatch", "group.sbatch"):
        assert (jobs / name).read_text() == (PACKAGE_SCRIPTS / name).read_text()
    submit = (jobs / "submit.sh").read_text()
    assert ('sbatch --parsable --array="${1:-0-2}%2" --cpus-per-task=2 --mem=3G '
            "--time=12:00:00 participant.sbatch") in submit
    assert '--dependency=afterok:"${array%%;*}" group.sbatch' in submit
    assert (jobs / "logs").is_dir()

    # array task 1 as SLURM would start it: the second participant, SLURM's CPUs and memory
    settings = (jobs / "settings.sh").read_text()
    fake = _fake_bids_mdd(tmp_path)
    (jobs / "settings.sh").write_text(settings.replace(
        next(line for line in settings.splitlines() if line.startswith("BIDS_MDD=")),
        f"BIDS_MDD={fake}"))
    record = tmp_path / "args.txt"
    env = {**os.environ, "RECORD": str(record), "SLURM_SUBMIT_DIR": str(jobs),
           "SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_JOB_ID": "41", "SLURM_CPUS_PER_TASK": "2",
           "SLURM_MEM_PER_NODE": "3072"}
    subprocess.run(["bash", jobs / "participant.sbatch"], env=env, check=True,
                   capture_output=True)
    assert record.read_text().splitlines() == [
        str(tiny_bids), str(tmp_path / "out"), "participant", "--participant-label", "02",
        "-w", str(jobs / "work" / "sub-02"), "--nprocs", "2", "--mem-gb", "3", "--sloppy",
        "--seed", "7"]
    subprocess.run(["bash", jobs / "group.sbatch"], env=env, check=True, capture_output=True)
    assert record.read_text().splitlines() == [
        str(tiny_bids), str(tmp_path / "out"), "group", "-w", str(jobs / "work" / "group"),
        "--nprocs", "2"]

    # a task past the list fails with a message, not with an empty label
    env["SLURM_ARRAY_TASK_ID"] = "3"
    past = subprocess.run(["bash", jobs / "participant.sbatch"], env=env, capture_output=True,
                          text=True)
    assert past.returncode == 64 and "no participant at line 4" in past.stderr


def test_apptainer_branch_binds_and_node_local_work(tiny_bids, tmp_path, capsys) -> None:
    """With --image the tasks run ``apptainer run --cleanenv`` (a stand-in on PATH records its
    arguments): the input bound read-only, the output, the task's work folder (here node-local
    scratch named by a variable, expanded on the node) and the extra --bind."""
    image, models = tmp_path / "bids_mdd.sif", tmp_path / "models"
    image.write_bytes(b"SIF")
    jobs, out = tmp_path / "jobs", tmp_path / "out"
    assert main([str(tiny_bids), str(out), str(jobs), "--image", str(image), "--bind",
                 str(models), "--work-root", "$NODE_SCRATCH/bids_mdd",
                 "--participant-args=--models " + str(models)]) == 0, capsys.readouterr().err
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _fake_bids_mdd(tmp_path).rename(bin_dir / "apptainer")
    scratch, record = tmp_path / "node scratch", tmp_path / "args.txt"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "RECORD": str(record),
           "NODE_SCRATCH": str(scratch), "SLURM_SUBMIT_DIR": str(jobs),
           "SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_JOB_ID": "41", "SLURM_CPUS_PER_TASK": "4",
           "SLURM_MEM_PER_NODE": "16384"}
    subprocess.run(["bash", jobs / "participant.sbatch"], env=env, check=True,
                   capture_output=True)
    work = scratch / "bids_mdd" / "sub-03"
    assert record.read_text().splitlines() == [
        "run", "--cleanenv", "-B", f"{tiny_bids}:{tiny_bids}:ro,{out},{work},{models}",
        str(image), str(tiny_bids), str(out), "participant", "--participant-label", "03",
        "-w", str(work), "--nprocs", "4", "--mem-gb", "16", "--models", str(models)]
    assert work.is_dir() and out.is_dir()  # bind sources must exist before apptainer starts
    subprocess.run(["bash", jobs / "group.sbatch"], env=env, check=True, capture_output=True)
    group_work = scratch / "bids_mdd" / "group"
    assert record.read_text().splitlines() == [
        "run", "--cleanenv", "-B", f"{tiny_bids}:{tiny_bids}:ro,{out},{group_work},{models}",
        str(image), str(tiny_bids), str(out), "group", "-w", str(group_work), "--nprocs", "4"]

    # what apptainer cannot bind, and a missing image, are refused before anything is written
    assert main([str(tiny_bids), str(tmp_path / "a,b"), str(tmp_path / "jobs2"), "--image",
                 str(image)]) == 64
    assert "cannot bind a path with ',' or ':'" in capsys.readouterr().err
    assert main([str(tiny_bids), str(out), str(tmp_path / "jobs3"), "--image",
                 str(tmp_path / "missing.sif")]) == 66
    assert "no such Apptainer image" in capsys.readouterr().err
    assert not (tmp_path / "jobs2").exists() and not (tmp_path / "jobs3").exists()


def test_unknown_label_and_missing_sbatch(tiny_bids, tmp_path, capsys, monkeypatch) -> None:
    assert main([str(tiny_bids), str(tmp_path / "out"), str(tmp_path / "jobs"),
                 "--participant-label", "09"]) == 18
    assert "09" in capsys.readouterr().err
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch
    assert main([str(tiny_bids), str(tmp_path / "out"), str(tmp_path / "jobs"),
                 "--submit"]) == 66
    assert "sbatch is not on PATH" in capsys.readouterr().err


def test_doc_shows_the_package_scripts() -> None:
    """docs/hpc.md shows the job scripts as they are in the package, and the README links it."""
    doc = (REPO / "docs" / "hpc.md").read_text()
    for name in ("participant.sbatch", "group.sbatch"):
        shown = doc.split(f"`bids_mdd/data/slurm/{name}`:\n```bash\n")[1].split("\n```")[0]
        assert shown + "\n" == (PACKAGE_SCRIPTS / name).read_text(), name
    assert "(docs/hpc.md)" in (REPO / "README.md").read_text()
