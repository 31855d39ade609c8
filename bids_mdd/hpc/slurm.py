"""A SLURM job folder for a dataset: the participant array and the group job that waits for it.

The job scripts are package files (``bids_mdd/data/slurm/*.sbatch``), copied unchanged; what
differs per dataset goes into ``settings.sh`` (paths, image, bids_mdd options) and
``participants.txt`` (one label per array task), so nobody hand-edits a participant list.
``submit.sh`` submits the array and then the group job with ``--dependency=afterok``.
With an Apptainer image the job scripts bind the input read-only, the output folder, the task's
work folder and the extra ``binds``; the templates are the image's own.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from bids_mdd import __version__
from bids_mdd.errors import BidsMddError, ExitCode

SCRIPTS = ("participant.sbatch", "group.sbatch")


@dataclass(frozen=True)
class SlurmJob:
    """What a job folder runs, and with which resources per array task."""

    bids_dir: Path
    output_dir: Path
    labels: list[str]
    work_root: str  # may name $VARIABLES, expanded on the node when a task starts
    image: Path | None = None  # an Apptainer image; None: the bids_mdd of this environment
    binds: list[Path] = field(default_factory=list)  # more host folders the image must see
    participant_args: list[str] = field(default_factory=list)
    group_args: list[str] = field(default_factory=list)
    cpus: int = 4
    mem_gb: int = 16
    time: str = "12:00:00"
    max_parallel: int | None = None  # array tasks running at once (SLURM's %N)

    def settings(self) -> str:
        """settings.sh: shell assignments the job scripts source."""
        bids_mdd = shutil.which("bids_mdd") or "bids_mdd"
        lines = [f"# written by bids_mdd-slurm {__version__}; sourced by the job scripts",
                 f"BIDS_DIR={shlex.quote(str(self.bids_dir))}",
                 f"OUTPUT_DIR={shlex.quote(str(self.output_dir))}",
                 f"WORK_ROOT={_expandable(self.work_root)}",
                 f"IMAGE={shlex.quote(str(self.image or ''))}",
                 f"BIND={shlex.quote(','.join(str(p) for p in self.binds))}",
                 f"BIDS_MDD={shlex.quote(bids_mdd)}",
                 f"EXTRA_ARGS=({shlex.join(self.participant_args)})",
                 f"GROUP_ARGS=({shlex.join(self.group_args)})"]
        if self.image is None and os.environ.get("TEMPLATEFLOW_HOME"):
            lines.append("export TEMPLATEFLOW_HOME="
                         + shlex.quote(os.environ["TEMPLATEFLOW_HOME"]))
        return "\n".join(lines) + "\n"

    def submit_script(self) -> str:
        """submit.sh [INDICES]: the array (every participant, or only the task indices given,
        e.g. ``3,7`` to rerun failed tasks), then the group job once every task succeeded."""
        limit = f"%{self.max_parallel}" if self.max_parallel else ""
        return (
            "#!/bin/bash\n"
            "# Submit the participant array, then the group level after every task succeeded.\n"
            "#   ./submit.sh          every participant (line N of participants.txt = task N-1)\n"
            "#   ./submit.sh 3,7      only tasks 3 and 7 (rerun failed ones; finished steps of\n"
            "#                        their work folders are reused), then the group level again\n"
            "set -euo pipefail\n"
            'cd "$(dirname "$0")"\n'
            f'array=$(sbatch --parsable --array="${{1:-0-{len(self.labels) - 1}}}{limit}" '
            f"--cpus-per-task={self.cpus} --mem={self.mem_gb}G --time={self.time} "
            "participant.sbatch)\n"
            'group=$(sbatch --parsable --dependency=afterok:"${array%%;*}" group.sbatch)\n'
            'echo "participant array ${array%%;*}, group job ${group%%;*}"\n')


def _expandable(value: str) -> str:
    """``value`` double-quoted for bash: ``$VARIABLES`` expand when settings.sh is sourced."""
    return '"' + re.sub(r'([\\"`])', r"\\\1", value) + '"'


def write_job_folder(job: SlurmJob, job_dir: Path) -> Path:
    """Write the job folder (scripts, settings, participants, logs/); return submit.sh."""
    if not job.labels:
        raise BidsMddError(f"{job.bids_dir}: no participant to submit", ExitCode.NO_FILES)
    if job.image is not None:
        for path in (job.bids_dir, job.output_dir, job.work_root, *job.binds):
            if any(char in str(path) for char in ",:"):  # apptainer -B separators
                raise BidsMddError(f"{path}: Apptainer cannot bind a path with ',' or ':'; "
                                   "use a symlink without them", ExitCode.USAGE)
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / "logs").mkdir(exist_ok=True)
    for name in SCRIPTS:
        source = resources.files("bids_mdd") / "data" / "slurm" / name
        (job_dir / name).write_text(source.read_text(encoding="utf-8"), encoding="utf-8")
    (job_dir / "settings.sh").write_text(job.settings(), encoding="utf-8")
    (job_dir / "participants.txt").write_text("\n".join(job.labels) + "\n", encoding="utf-8")
    submit = job_dir / "submit.sh"
    submit.write_text(job.submit_script(), encoding="utf-8")
    submit.chmod(0o755)
    return submit


def submit(submit_script: Path) -> str:
    """Run submit.sh; return what it printed (the job ids)."""
    if shutil.which("sbatch") is None:
        raise BidsMddError(f"sbatch is not on PATH: run {submit_script} on the cluster's login "
                           "node", ExitCode.MISSING_INPUT)
    result = subprocess.run(["bash", str(submit_script)], capture_output=True, text=True,
                            check=False)
    if result.returncode != 0:
        why = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise BidsMddError(f"{submit_script}: sbatch failed: {why}", ExitCode.FAILURE)
    return result.stdout.strip()
