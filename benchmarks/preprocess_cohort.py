"""Preprocess every T1w of a real cohort (default: the 72 of ds002748) with the default
participant level, resumably, outside the repository, and print the time per participant and the
QC table. No assertions.

Participants go through ``bids_mdd ... participant --preproc-only`` in batches of ``--batch``
(default 2, one per core): a batch's participants finish together, so a killed run loses at
most one batch, and a rerun skips every participant whose QC metrics exist and that has no
in-progress marker. Per participant it records the batch's wall time divided by its size
(throughput) and the nipype nodes' own run times (``real_scans.step_seconds``: the work dir's
cached results).

Run: ``.venv/bin/python benchmarks/preprocess_cohort.py [--bids DIR | --whole-head] [--out DIR]
[--batch N] [--limit N]``; the table is ``OUT/preprocess_cohort.tsv``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

SHARED = Path(__file__).resolve().parents[2] / "shared"
os.environ.setdefault("TEMPLATEFLOW_HOME", str(SHARED / "templateflow"))
os.environ.setdefault("TEMPLATEFLOW_AUTOUPDATE", "0")
QC_COLUMNS = ("tiv_ml", "gm_fraction", "wm_fraction", "csf_fraction", "template_ncc",
              "template_mask_dice")

from bids_mdd.bids.names import derivative_path, in_progress_path  # noqa: E402
from real_scans import step_seconds, whole_head_bids  # noqa: E402  (benchmarks/real_scans.py)


def labels_of(bids: Path) -> list[str]:
    """Participant labels in participants.tsv order (every ds002748 subject has one T1w), else
    the sub-* folders."""
    if not (bids / "participants.tsv").is_file():
        return sorted(p.name.removeprefix("sub-") for p in bids.glob("sub-*"))
    table = pd.read_csv(bids / "participants.tsv", sep="\t", dtype=str)
    return [p.removeprefix("sub-") for p in table["participant_id"]]


def metrics_path(out: Path, label: str) -> Path:
    return derivative_path(out, subject=label, desc="qc", suffix="metrics", extension=".json")


def finished(out: Path, label: str) -> bool:
    return metrics_path(out, label).is_file() and not in_progress_path(out, label).exists()


def run_batch(bids: Path, out: Path, work: Path, batch: list[str], log: Path) -> tuple[int, float]:
    command = [str(Path(sys.executable).with_name("bids_mdd")), str(bids), str(out),
               "participant", "--participant-label", *batch, "-w", str(work),
               "--preproc-only", "--skip-bids-validation", "--nprocs", str(len(batch)),
               "--omp-nthreads", "1", "--qc-fail-ok"]
    start = time.monotonic()
    with log.open("a") as handle:
        handle.write(" ".join(command) + "\n")
        handle.flush()
        code = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT).returncode
    return code, time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bids", type=Path, default=SHARED / "data" / "ds002748")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).resolve().parents[2] / "cohort" / "ds002748")
    parser.add_argument("--whole-head", action="store_true",
                        help="the 12 whole-head scans of ../shared/data/whole-head instead "
                             "(a dataset of symlinks, as benchmarks/real_scans.py builds it)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--limit", type=int, default=0, help="stop after N new participants")
    args = parser.parse_args()
    if args.whole_head:
        args.out = args.out.with_name("whole-head")
        args.bids = args.out / "bids"
        if not args.bids.is_dir():
            whole_head_bids(args.bids)
    derivatives, work = args.out / "derivatives", args.out / "work"
    args.out.mkdir(parents=True, exist_ok=True)
    timing_path = args.out / "timing.tsv"
    timing = (pd.read_csv(timing_path, sep="\t", dtype={"participant": str})
              if timing_path.is_file() else pd.DataFrame(columns=["participant", "wall_s",
                                                                  "batch_size", "exit"]))
    todo = [label for label in labels_of(args.bids) if not finished(derivatives, label)]
    if args.limit:
        todo = todo[:args.limit]
    for start in range(0, len(todo), args.batch):
        batch = todo[start:start + args.batch]
        code, seconds = run_batch(args.bids, derivatives, work, batch, args.out / "run.log")
        rows = pd.DataFrame({"participant": batch, "wall_s": round(seconds / len(batch), 1),
                             "batch_size": len(batch), "exit": code})
        timing = pd.concat([timing[~timing["participant"].isin(batch)], rows])
        timing.to_csv(timing_path, sep="\t", index=False)
        print(f"{' '.join(batch)}: exit {code}, {seconds:.0f} s", flush=True)
    rows = []
    for label in labels_of(args.bids):
        row: dict = {"participant": label}
        if finished(derivatives, label):
            metrics = json.loads(metrics_path(derivatives, label).read_text())
            row.update({k: metrics.get(k) for k in QC_COLUMNS})
            row["flags"] = "; ".join(metrics.get("flags", []))
            row["qc_gate"] = "; ".join(metrics.get("qc_failures", [])) or "pass"
        row.update(step_seconds(work, args.bids, label))
        rows.append(row)
    table = pd.DataFrame(rows).merge(timing, on="participant", how="left")
    table.to_csv(args.out / "preprocess_cohort.tsv", sep="\t", index=False)
    with pd.option_context("display.width", 200, "display.max_rows", 200):
        print(table.to_string(index=False))
        print(table.describe().round(3).to_string())


if __name__ == "__main__":
    main()
