"""Preprocess every real scan in ../shared/data and print QC figures per scan (no assertions).

- ds002748-subset: 20 skull-stripped T1w of a depression cohort;
- whole-head: 10 IXI scans at 2 mm (GM/WM Dice against their DLMUSE segmentations), one
  studyforrest scan at 0.7 mm and one AFNI sample at 2 mm.

Run: ``.venv/bin/python benchmarks/real_scans.py [--sloppy] [--only ds002748|whole-head]
[--keep DIR]``. Outputs (figures, reports) stay in DIR when given.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nilearn.image import resample_to_img

SHARED = Path(__file__).resolve().parents[2] / "shared"
os.environ.setdefault("TEMPLATEFLOW_HOME", str(SHARED / "templateflow"))
WHOLE_HEAD = SHARED / "data" / "whole-head"
IXI = WHOLE_HEAD / "ixi_2mm"

from bids_mdd.bids.names import derivative_path  # noqa: E402
from bids_mdd.cli.run import main as bids_mdd  # noqa: E402
from bids_mdd.preproc.qc import dice  # noqa: E402


def whole_head_bids(root: Path) -> Path:
    """A BIDS dataset of symlinks to the whole-head scans (labels: IXI012, forrest, afni)."""
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text('{"Name": "whole-head", "BIDSVersion": "1.10.0"}')
    scans = {re.sub(r"-.*", "", p.name): p for p in sorted(IXI.glob("IXI*-T1_ds.nii.gz"))}
    scans["forrest"] = WHOLE_HEAD / "studyforrest_hanke_example_T1w_0.7mm_PDDL.nii.gz"
    scans["afni"] = WHOLE_HEAD / "afni_allineate_T1_head_2mm_CC0.nii.gz"
    for label, path in scans.items():
        folder = root / f"sub-{label}" / "anat"
        folder.mkdir(parents=True)
        (folder / f"sub-{label}_T1w.nii.gz").symlink_to(path)
    return root


def muse_dice(out: Path, label: str) -> dict[str, float]:
    """GM and WM Dice of our segmentation against the IXI scan's DLMUSE labels."""
    table = pd.read_csv(IXI / "muse_tissue_labels.csv").set_index("name")
    seg = next((IXI / "dlmuse_seg").glob(f"{label}-*_DLMUSE.nii.gz"))
    result = {}
    for tissue in ("GM", "WM"):
        ours = derivative_path(out, subject=label, label=tissue, suffix="probseg")
        reference = resample_to_img(seg, ours, interpolation="nearest", force_resample=True,
                                    copy_header=True)
        labels = [int(x) for x in table.loc[tissue, "muse_labels"].split()]
        truth = np.isin(np.asarray(reference.dataobj), labels)
        result[f"{tissue.lower()}_dice_muse"] = dice(nib.load(ours).get_fdata() > 0.5, truth)
    return result


def run_dataset(bids: Path, out: Path, work: Path, sloppy: bool) -> list[dict]:
    rows = []
    for subject_dir in sorted(bids.glob("sub-*")):
        label = subject_dir.name[4:]
        start = time.perf_counter()
        code = bids_mdd([str(bids), str(out), "participant", "--participant-label", label,
                         "-w", str(work), *(["--sloppy"] if sloppy else [])])
        row = {"subject": label, "exit": code, "seconds": round(time.perf_counter() - start)}
        metrics_path = derivative_path(out, subject=label, desc="qc", suffix="metrics",
                                       extension=".json")
        if metrics_path.is_file():
            metrics = json.loads(metrics_path.read_text())
            row.update({k: metrics[k] for k in ("tiv_ml", "gm_fraction", "template_mask_dice",
                                                "template_ncc")})
            row["flags"] = "; ".join(metrics["flags"])
        if label.startswith("IXI") and code == 0:
            row.update(muse_dice(out, label))
        rows.append(row)
        print(row, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sloppy", action="store_true")
    parser.add_argument("--only", choices=("ds002748", "whole-head"))
    parser.add_argument("--keep", type=Path, help="keep outputs here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        datasets = {"ds002748": SHARED / "data" / "ds002748-subset",
                    "whole-head": whole_head_bids(Path(tmp) / "whole-head-bids")}
        rows = []
        for name, bids in datasets.items():
            if args.only in (None, name):
                rows += run_dataset(bids, base / name / "out", base / name / "work", args.sloppy)
        table = pd.DataFrame(rows)
        print(table.to_string(index=False))
        print(table.describe().loc[["mean", "min", "max"]].round(3).to_string())


if __name__ == "__main__":
    main()
