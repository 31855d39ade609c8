"""Participant-level throughput on this machine: 8 SYNTHETIC participants at default quality
(not --sloppy), preprocessing and the packaged demo models, in one run of this script.

Configurations, each a fresh ``bids_mdd ... participant`` process with its own work and output
folders:

(a) ``--nprocs 1 --omp-nthreads 1``: one node at a time;
(b) ``--nprocs 2 --omp-nthreads 1``: two single-threaded nodes at once, across participants
    (issue target: (a)/(b) >= 1.6);
(c) the behaviour before the participant package, for comparison: one participant after
    another (one ``--participant-label`` run each) with ``--nprocs 2`` (so 2 threads per node);
(d) with ``--defaults``: no resource option at all (what the defaults choose is printed anyway).

For each: wall time, participants per hour, and peak memory, the largest sum of the resident
set sizes (VmRSS, /proc) of the process and all its descendants, sampled every 0.5 s (shared
pages count once per process, so this over-states a little). Prints figures; asserts nothing.

Run: ``.venv/bin/python benchmarks/throughput.py [--participants 8] [--resolution 2]
[--defaults] [--keep DIR]`` (alone on the machine: on 2 cores anything else in parallel skews
every figure).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TEMPLATEFLOW_HOME",
                      str(Path(__file__).resolve().parents[2] / "shared" / "templateflow"))


def _tree_rss_kib(root: int) -> int:
    """Summed VmRSS (KiB) of ``root`` and its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines()
                          if ":" in line)
        except OSError:  # the process ended meanwhile
            continue
        pid = int(status.parent.name)
        children.setdefault(int(fields["PPid"]), []).append(pid)
        rss[pid] = int(fields.get("VmRSS", "0 kB").split()[0])
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo += children.get(pid, [])
    return total


def run_measured(command: list[str], log: Path) -> tuple[float, float, int]:
    """Run ``command``; return wall seconds, peak tree RSS (GiB) and the exit code."""
    start = time.perf_counter()
    with open(log, "a", encoding="utf-8") as stream:
        process = subprocess.Popen(command, stdout=stream, stderr=stream)
        peak = 0
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.wait(0.5):
                peak = max(peak, _tree_rss_kib(process.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        code = process.wait()
        stop.set()
        sampler.join()
    return time.perf_counter() - start, peak / 2**20, code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--participants", type=int, default=8)
    parser.add_argument("--resolution", type=float, default=2.0,
                        help="voxel size (mm) of the synthetic T1w (the cohort's default)")
    parser.add_argument("--defaults", action="store_true", help="also run (d)")
    parser.add_argument("--keep", type=Path, help="keep inputs, outputs and logs here")
    options = parser.parse_args()

    from bids_mdd.participant.resources import available_cpus, plan_resources
    from bids_mdd.synth.cohort import generate_cohort
    from bids_mdd.synth.model import CohortSpec

    root = options.keep or Path(tempfile.mkdtemp(prefix="bids_mdd-throughput-"))
    root.mkdir(parents=True, exist_ok=True)
    bids = root / "bids"
    n = options.participants
    if not bids.is_dir():
        generate_cohort(bids, CohortSpec(n_mdd=n // 2, n_hc=n - n // 2, seed=21,
                                         resolution=options.resolution), n_jobs=1)
    labels = sorted(p.name.removeprefix("sub-") for p in bids.glob("sub-*"))
    app = str(Path(sys.executable).with_name("bids_mdd"))
    default = plan_resources(nprocs=None, omp_nthreads=None, mem_gb=None, n_inputs=len(labels),
                             deterministic=False, model_batch_size=None, device="cpu")
    print(f"{len(labels)} SYNTHETIC participants ({options.resolution:g} mm whole-head T1w), "
          f"default quality, packaged demo models; {available_cpus()} CPU(s) available "
          f"(os.cpu_count() {os.cpu_count()}); the defaults choose: {default.describe()}",
          flush=True)

    def one_run(name: str, *extra: str, labels_each: list[str] | None = None) -> dict:
        out, work, log = root / f"out_{name}", root / f"work_{name}", root / f"{name}.log"
        for path in (out, work):
            shutil.rmtree(path, ignore_errors=True)
        base = [app, str(bids), str(out), "participant", "-w", str(work), *extra]
        commands = ([base + ["--participant-label", label] for label in labels_each]
                    if labels_each else [base])
        seconds, peak, codes = 0.0, 0.0, []
        for command in commands:
            wall, rss, code = run_measured(command, log)
            seconds, peak = seconds + wall, max(peak, rss)
            codes.append(code)
        row = {"name": name, "seconds": seconds, "per_hour": len(labels) * 3600 / seconds,
               "peak_gib": peak, "exit": max(codes)}
        print(f"{name}: {seconds:7.1f} s, {row['per_hour']:5.1f} participants/h, peak RSS "
              f"{peak:5.2f} GiB, exit code {row['exit']}", flush=True)
        return row

    rows = [one_run("a_nprocs1_omp1", "--nprocs", "1", "--omp-nthreads", "1"),
            one_run("b_nprocs2_omp1", "--nprocs", "2", "--omp-nthreads", "1"),
            one_run("c_sequential_nprocs2", "--nprocs", "2", labels_each=labels)]
    if options.defaults:
        rows.append(one_run("d_defaults"))
    speedup = rows[0]["seconds"] / rows[1]["seconds"]
    print(f"(a)/(b) = {speedup:.2f} (target >= 1.6); (c)/(b) = "
          f"{rows[2]['seconds'] / rows[1]['seconds']:.2f}")
    if not options.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
