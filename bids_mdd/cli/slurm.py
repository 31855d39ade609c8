"""``bids_mdd-slurm BIDS_DIR OUTPUT_DIR JOB_DIR``: a SLURM job folder for a dataset (one
participant per array task, then the group level), printed or submitted."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from bids_mdd import __version__
from bids_mdd.bids.discovery import discover_t1w, open_layout
from bids_mdd.cli.bootstrap import run_command
from bids_mdd.cli.help_format import DefaultsHelpFormatter
from bids_mdd.cli.parser import BidsAppArgumentParser, positive_int
from bids_mdd.errors import BidsMddError, ExitCode
from bids_mdd.hpc.slurm import SlurmJob, submit, write_job_folder


def build_parser() -> argparse.ArgumentParser:
    """Build the ``bids_mdd-slurm`` argument parser."""
    parser = BidsAppArgumentParser(
        prog="bids_mdd-slurm", formatter_class=DefaultsHelpFormatter,
        description="Write a SLURM job folder: participants.txt, settings.sh, the participant "
                    "array and group job scripts, and submit.sh (array, then the group job "
                    "with --dependency=afterok).")
    parser.add_argument("bids_dir", type=Path, help="the BIDS dataset")
    parser.add_argument("output_dir", type=Path, help="bids_mdd's output folder")
    parser.add_argument("job_dir", type=Path, help="folder for the job scripts and logs")
    parser.add_argument("--participant-label", nargs="+", metavar="LABEL",
                        help="participants to submit (default: every one with a T1w)")
    parser.add_argument("--image", type=Path, help="an Apptainer image of bids_mdd (default: "
                        "the bids_mdd of this environment)")
    parser.add_argument("--work-root", help="folder for one work folder per participant: on "
                        "shared storage a rerun task resumes (default: JOB_DIR/work); "
                        "$VARIABLES expand on the node, e.g. '$TMPDIR/bids_mdd' for node-local "
                        "scratch, where a rerun task starts over")
    parser.add_argument("--bind", type=Path, action="append", default=[], metavar="PATH",
                        help="with --image: one more host folder the image must see (e.g. "
                             "the --models folder); the input, output and work folders are "
                             "bound already")
    parser.add_argument("--cpus", type=positive_int, default=4, help="CPUs per array task")
    parser.add_argument("--mem-gb", type=positive_int, default=16, help="memory per array task")
    parser.add_argument("--time", default="12:00:00", help="time limit per array task")
    parser.add_argument("--max-parallel", type=positive_int,
                        help="array tasks running at once (default: as many as SLURM allows)")
    parser.add_argument("--participant-args", default="",
                        help='more bids_mdd participant options, with "=": '
                             '--participant-args="--models /models --sloppy"')
    parser.add_argument("--group-args", default="",
                        help='more bids_mdd group options, with "=": '
                             '--group-args="--fdr-q 0.01"')
    parser.add_argument("--submit", action="store_true", help="submit with sbatch now")
    parser.add_argument("--version", action="version", version=f"bids_mdd {__version__}")
    return parser


def _work_root(given: str | None, job_dir: Path) -> str:
    """The work root as settings.sh holds it: absolute, unless it names $VARIABLES."""
    if given is None:
        return str(job_dir / "work")
    return given if "$" in given else str(Path(given).resolve())


def main(argv: Sequence[str] | None = None) -> int:
    """Write (and maybe submit) the job folder; return an exit code."""
    args = build_parser().parse_args(argv)

    def work() -> int:
        bids_dir = args.bids_dir.resolve()
        if args.image is not None and not args.image.is_file():
            raise BidsMddError(f"{args.image}: no such Apptainer image; build it from "
                               "singularity.def (docs/containers.md)", ExitCode.MISSING_INPUT)
        inputs = discover_t1w(open_layout(bids_dir), args.participant_label)
        job_dir = args.job_dir.resolve()
        job = SlurmJob(
            bids_dir=bids_dir, output_dir=args.output_dir.resolve(),
            labels=list(dict.fromkeys(t1w.subject for t1w in inputs)),
            work_root=_work_root(args.work_root, job_dir),
            image=args.image.resolve() if args.image else None,
            binds=[path.resolve() for path in args.bind],
            participant_args=shlex.split(args.participant_args),
            group_args=shlex.split(args.group_args), cpus=args.cpus, mem_gb=args.mem_gb,
            time=args.time, max_parallel=args.max_parallel)
        script = write_job_folder(job, job_dir)
        print(f"{len(job.labels)} participant(s) in {job_dir / 'participants.txt'}")
        if args.submit:
            print(submit(script))
        else:
            print(f"submit with: {script}")
        return int(ExitCode.OK)

    return run_command("bids_mdd-slurm", work)


if __name__ == "__main__":
    sys.exit(main())
