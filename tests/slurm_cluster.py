"""A private one-node SLURM on localhost for the tests: munged, slurmctld and slurmd with their
own configuration, key, sockets and state in a temporary folder, stopped by PID afterwards.

Needs root (munged runs as the munge user, slurmd as root) and Debian's slurm-wlm and munge.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")


def missing() -> str | None:
    """Why no cluster can start here, or None."""
    absent = [name for name in (*DAEMONS, "sbatch", "runuser") if shutil.which(name) is None]
    if absent:
        return f"{', '.join(absent)} not installed (apt-get install slurm-wlm munge)"
    if os.geteuid() != 0:
        return "the SLURM daemons need root"
    return None


def _config(root: Path, cpus: int, mem_mb: int) -> str:
    host = socket.gethostname().split(".")[0]
    return "\n".join([
        "ClusterName=bidsmddtest", f"SlurmctldHost={host}", "SlurmUser=root",
        "SlurmctldPort=16817", "SlurmdPort=16818", "AuthType=auth/munge",
        f"AuthInfo=socket={root}/munge/munge.socket.2", "CredType=cred/munge",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core_Memory",
        "SchedulerType=sched/backfill", "MpiDefault=none", "ReturnToService=2",
        "MinJobAge=3600", f"StateSaveLocation={root}/state", f"SlurmdSpoolDir={root}/spool",
        f"SlurmctldPidFile={root}/slurmctld.pid", f"SlurmdPidFile={root}/slurmd.pid",
        f"SlurmctldLogFile={root}/slurmctld.log", f"SlurmdLogFile={root}/slurmd.log",
        "AccountingStorageType=accounting_storage/none", "JobCompType=jobcomp/none",
        "JobAcctGatherType=jobacct_gather/none",
        f"NodeName={host} CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN",
        "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP", ""])


def _running(pid: int) -> bool:
    """Whether ``pid`` lives (a zombie, left for a parent that never reaps, does not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def _stop(pid_file: Path, wait_s: float = 30) -> None:
    """SIGTERM the daemon, then wait until it has exited (munged writes its seed file last)."""
    try:
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        return
    deadline = time.monotonic() + wait_s
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.1)


@contextmanager
def slurm_cluster(root: Path, cpus: int = 2, mem_mb: int = 8192) -> Iterator[dict[str, str]]:
    """Start the cluster under ``root``; yield the environment that reaches it."""
    munge = root / "munge"
    for folder in (munge, root / "state", root / "spool"):
        folder.mkdir(parents=True)
    root.chmod(0o755)
    shutil.chown(munge, "munge", "munge")
    munge.chmod(0o711)  # munged insists on a private socket folder
    key = munge / "munge.key"
    key.write_bytes(os.urandom(1024))
    shutil.chown(key, "munge", "munge")
    key.chmod(0o400)
    conf = root / "slurm.conf"
    conf.write_text(_config(root, cpus, mem_mb))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    try:
        subprocess.run(["runuser", "-u", "munge", "--", "munged",
                        f"--socket={munge}/munge.socket.2", f"--key-file={key}",
                        f"--pid-file={munge}/munged.pid", f"--log-file={munge}/munged.log",
                        f"--seed-file={munge}/munged.seed"], check=True)
        subprocess.run(["slurmctld", "-f", str(conf)], check=True, env=env)
        subprocess.run(["slurmd", "-f", str(conf)], check=True, env=env)
        deadline = time.monotonic() + 60
        while "idle" not in subprocess.run(["sinfo", "-h", "-o", "%T"], env=env,
                                           capture_output=True, text=True).stdout:
            if time.monotonic() > deadline:
                raise RuntimeError(f"SLURM did not come up; see {root}/slurmctld.log")
            time.sleep(0.5)
        yield env
    finally:
        for pid_file in (root / "slurmd.pid", root / "slurmctld.pid", munge / "munged.pid"):
            _stop(pid_file)


def job_times(job_id: str, env: dict[str, str]) -> dict[str, str]:
    """``scontrol show job``'s state, exit code and start/end times of a job (or array task)."""
    shown = subprocess.run(["scontrol", "-o", "show", "job", job_id], env=env,
                           capture_output=True, text=True, check=True).stdout
    fields = dict(item.split("=", 1) for item in shown.split() if "=" in item)
    return {key: fields[key] for key in ("JobState", "ExitCode", "StartTime", "EndTime")}
