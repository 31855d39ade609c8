"""Participants finishing as they go, on real ds002748 scans: when each participant's complete
outputs (derivatives, predictions, report) appear, against the one-graph breadth-first order
nipype used before, in one run of this script. Prints figures; asserts nothing.

Runs, each a fresh ``bids_mdd ... participant --nprocs 2`` process with its own folders and
the packaged demo models:

1. one participant alone (its wall time is the yardstick);
2. N participants, depth-first (the scheduler now);
3. the same N, breadth-first: nipype's own topological order, as before (the scheduler's job
   order patched back to nipype's in that process, for this comparison only);
4. a rerun of (2) with other thread counts (``--nprocs 1 --omp-nthreads 2``): every
   participant is finished; printed: its wall time and the seconds after its start-up (the
   log line naming the selected T1w).

For (2) and (3): wall time and the second, from the start, at which each participant's report
appears (sampled every second; the report is written last).

Run: ``.venv/bin/python benchmarks/as_they_go.py [--participants 8] [--keep DIR]`` (alone on
the machine).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"
os.environ.setdefault("TEMPLATEFLOW_HOME", str(SHARED / "templateflow"))
DATASET = SHARED / "data" / "ds002748-subset"

#: Runs bids_mdd with nipype's own job order (breadth-first across participants).
BREADTH_FIRST = ("import sys; from nipype.pipeline.plugins.multiproc import MultiProcPlugin; "
                 "from bids_mdd.participant.scheduler import DepthFirstMultiProcPlugin as P; "
                 "P._sort_jobs = MultiProcPlugin._sort_jobs; from bids_mdd.cli.run import main; "
                 "sys.exit(main(sys.argv[1:]))")


def run(command: list[str], out: Path, labels: list[str], log: Path) -> tuple[float, dict]:
    """Wall seconds, and per label the second its report appeared."""
    reports = {label: out / f"sub-{label}.html" for label in labels}
    done: dict[str, float] = {}
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as stream:
        process = subprocess.Popen(command, stdout=stream, stderr=stream)
        while process.poll() is None:
            time.sleep(1.0)
            for label, report in reports.items():
                if label not in done and report.exists():
                    done[label] = time.perf_counter() - start
    wall = time.perf_counter() - start
    for label, report in reports.items():
        done.setdefault(label, wall if report.exists() else float("nan"))
    if process.returncode:
        print(f"  exit code {process.returncode}; see {log}")
    return wall, done


def startup_seconds(log: Path, started: datetime) -> float:
    """Seconds from ``started`` to the log line naming the selected T1w."""
    for line in log.read_text(encoding="utf-8").splitlines():
        if "T1w image(s) of" in line and "selected" in line:
            stamp = datetime.strptime(line[:8], "%H:%M:%S").time()
            return (datetime.combine(started.date(), stamp) - started).total_seconds()
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--participants", type=int, default=8)
    parser.add_argument("--keep", type=Path)
    args = parser.parse_args()
    labels = sorted(p.name.removeprefix("sub-") for p in DATASET.glob("sub-*"))
    labels = labels[:args.participants]
    root = args.keep or Path(tempfile.mkdtemp(prefix="bids_mdd-as-they-go-"))
    root.mkdir(parents=True, exist_ok=True)
    app = str(Path(sys.executable).with_name("bids_mdd"))
    print(f"ds002748 scans {', '.join(labels)}; --nprocs 2, demo models; {os.cpu_count()} CPUs",
          flush=True)

    def command(name: str, chosen: list[str], *extra: str, program: list[str] | None = None
                ) -> tuple[list[str], Path]:
        out = root / f"out_{name}"
        return ([*(program or [app]), str(DATASET), str(out), "participant", "-w",
                 str(root / f"work_{name}"), "--models", "demo", "--skip-bids-validation",
                 "--participant-label", *chosen, *extra], out)

    for name in ("alone", "depth", "breadth"):
        shutil.rmtree(root / f"out_{name}", ignore_errors=True)
        shutil.rmtree(root / f"work_{name}", ignore_errors=True)
    cmd, out = command("alone", labels[:1], "--nprocs", "2")
    alone, _ = run(cmd, out, labels[:1], root / "alone.log")
    print(f"one participant alone: {alone:.0f} s", flush=True)
    for name, program in (("depth", None), ("breadth", [sys.executable, "-c", BREADTH_FIRST])):
        cmd, out = command(name, labels, "--nprocs", "2", program=program)
        wall, done = run(cmd, out, labels, root / f"{name}.log")
        times = sorted(done.values())
        print(f"{name}-first: {wall:.0f} s in all; reports at "
              + ", ".join(f"{t:.0f}" for t in times) + f" s; first at {times[0] / alone:.2f}x "
              "the participant alone", flush=True)
    cmd, out = command("depth", labels, "--nprocs", "1", "--omp-nthreads", "2")
    started = datetime.now()
    wall, _ = run(cmd, out, labels, root / "rerun.log")
    print(f"rerun of the {len(labels)} finished participants, other threads: {wall:.1f} s, of "
          f"which {wall - startup_seconds(root / 'rerun.log', started):.1f} s after start-up",
          flush=True)
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
