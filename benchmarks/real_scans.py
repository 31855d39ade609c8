"""Preprocess every real scan in ../shared/data with the old (k-means) and the new (template
priors) segmentation, and print per scan: GM/WM/CSF fractions of TIV, GM/WM Dice and brain-mask
Dice against DLMUSE (IXI), QC flags and seconds per step. No assertions.

- ds002748-subset: 20 skull-stripped T1w of a depression cohort;
- whole-head: 10 IXI scans at 2 mm with DLMUSE segmentations, one studyforrest scan at 0.7 mm
  and one AFNI sample at 2 mm.
Settings were chosen on the SELECTION split (IXI012/013/014/015/033, ds002748 sub-02/14/16);
the summary reports the other scans (REPORT split) apart.

Run: ``.venv/bin/python benchmarks/real_scans.py [--sloppy] [--only ds002748|whole-head]
[--keep DIR] [--subjects LABEL ...]``. Both runs share one work dir, so registration is computed
once per scan; outputs stay in DIR when given.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nilearn.image import resample_to_img

SHARED = Path(__file__).resolve().parents[2] / "shared"
os.environ.setdefault("TEMPLATEFLOW_HOME", str(SHARED / "templateflow"))
WHOLE_HEAD = SHARED / "data" / "whole-head"
IXI = WHOLE_HEAD / "ixi_2mm"
SELECTION = {"IXI012", "IXI013", "IXI014", "IXI015", "IXI033", "02", "14", "16"}
STEPS = ("validate", "n4", "register", "brain_mask", "segment", "gm_to_mni", "t1w_to_mni", "qc",
         "figures")

from nipype.utils.filemanip import loadpkl  # noqa: E402

from bids_mdd.bids.names import derivative_path  # noqa: E402
from bids_mdd.cli.run import main as bids_mdd  # noqa: E402
from bids_mdd.preproc.qc import dice  # noqa: E402
from bids_mdd.preproc.workflow import TOP_WORKFLOW, workflow_name  # noqa: E402


def whole_head_bids(root: Path) -> Path:
    """A BIDS dataset of symlinks to the whole-head scans (labels: IXI012, forrest, afni)."""
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(
        '{"Name": "whole-head", "BIDSVersion": "1.10.0"}')
    scans = {re.sub(r"-.*", "", p.name): p for p in sorted(IXI.glob("IXI*-T1_ds.nii.gz"))}
    scans["forrest"] = WHOLE_HEAD / "studyforrest_hanke_example_T1w_0.7mm_PDDL.nii.gz"
    scans["afni"] = WHOLE_HEAD / "afni_allineate_T1_head_2mm_CC0.nii.gz"
    for label, path in scans.items():
        folder = root / f"sub-{label}" / "anat"
        folder.mkdir(parents=True)
        (folder / f"sub-{label}_T1w.nii.gz").symlink_to(path)
    return root


def muse_labels(name: str) -> list[int]:
    table = pd.read_csv(IXI / "muse_tissue_labels.csv").set_index("name")
    return [int(x) for x in table.loc[name, "muse_labels"].split()]


def muse_metrics(out: Path, label: str) -> dict[str, float]:
    """GM/WM Dice (maps > 0.5) and brain-mask Dice against the scan's DLMUSE labels."""
    seg = next((IXI / "dlmuse_seg").glob(f"{label}-*_DLMUSE.nii.gz"))
    mask = derivative_path(out, subject=label, desc="brain", suffix="mask")
    reference = np.asarray(resample_to_img(seg, mask, interpolation="nearest",
                                           force_resample=True, copy_header=True).dataobj)
    result = {"mask_dice": dice(nib.load(mask).get_fdata() > 0,
                                np.isin(reference, muse_labels("ICV")))}
    for tissue in ("GM", "WM"):
        ours = derivative_path(out, subject=label, label=tissue, suffix="probseg")
        result[f"{tissue.lower()}_dice"] = dice(nib.load(ours).get_fdata() > 0.5,
                                                np.isin(reference, muse_labels(tissue)))
    return result


def muse_fractions(label: str) -> dict[str, float]:
    """DLMUSE's GM, WM and the rest (CSF, brainstem) as fractions of its ICV."""
    seg = np.asarray(nib.load(next((IXI / "dlmuse_seg").glob(f"{label}-*"))).dataobj)
    icv = np.isin(seg, muse_labels("ICV")).sum()
    gm, wm = (np.isin(seg, muse_labels(t)).sum() / icv for t in ("GM", "WM"))
    return {"scan": label, "method": "DLMUSE", "gm_fraction": gm, "wm_fraction": wm,
            "csf_fraction": 1.0 - gm - wm}


def step_seconds(work: Path, bids: Path, label: str) -> dict[str, float]:
    """Run time of each nipype node of the scan's workflow (from its cached results)."""
    from bids_mdd.bids.discovery import T1wInput

    t1w = T1wInput(bids / f"sub-{label}" / "anat" / f"sub-{label}_T1w.nii.gz", label)
    seconds = {}
    for step in STEPS:
        results = sorted((work / TOP_WORKFLOW / workflow_name(t1w) / step)
                         .glob("result_*.pklz"))
        if results:
            seconds[f"s_{step}"] = round(loadpkl(results[-1]).runtime.duration, 1)
    return seconds


def run_scan(bids: Path, base: Path, label: str, method: str, sloppy: bool) -> dict:
    out, work = base / f"out-{method}", base / "work"
    code = bids_mdd([str(bids), str(out), "participant", "--participant-label", label,
                     "-w", str(work), "--preproc-only", "--segmentation", method,
                     *(["--sloppy"] if sloppy else [])])
    row = {"scan": label, "method": method, "exit": code,
           "split": "selection" if label in SELECTION else "report"}
    metrics_path = derivative_path(out, subject=label, desc="qc", suffix="metrics",
                                   extension=".json")
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text())
        row.update({k: metrics[k] for k in ("tiv_ml", "gm_fraction", "wm_fraction",
                                            "csf_fraction", "template_ncc")})
        row["flags"] = "; ".join(metrics["flags"])
        row["brain_extraction"] = metrics["Parameters"]["BrainExtraction"][:40]
    if label.startswith("IXI") and code == 0:
        row.update(muse_metrics(out, label))
    row.update(step_seconds(work, bids, label))
    print(row, flush=True)
    return row


def summary(table: pd.DataFrame) -> None:
    """Mean, min and max per split and method; IXI (the scans DLMUSE labelled) on its own."""
    columns = [c for c in ("gm_fraction", "wm_fraction", "csf_fraction", "gm_dice", "wm_dice",
                           "mask_dice", "s_brain_mask", "s_segment") if c in table]
    table = table.assign(scans=np.where(table["scan"].str.startswith("IXI"), "IXI",
                                        table["dataset"]))
    grouped = table.groupby(["scans", "split", "method"])[columns]
    print("\nmean")
    print(grouped.mean().round(3).to_string())
    print("\nmin")
    print(grouped.min().round(3).to_string())
    print("\nmax")
    print(grouped.max().round(3).to_string())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sloppy", action="store_true")
    parser.add_argument("--only", choices=("ds002748", "whole-head"))
    parser.add_argument("--keep", type=Path, help="keep outputs here")
    parser.add_argument("--subjects", nargs="+", help="only these labels")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        datasets = {"ds002748": SHARED / "data" / "ds002748-subset",
                    "whole-head": whole_head_bids(Path(tmp) / "whole-head-bids")}
        rows = []
        for name, bids in datasets.items():
            if args.only not in (None, name):
                continue
            for subject_dir in sorted(bids.glob("sub-*")):
                label = subject_dir.name[4:]
                if args.subjects and label not in args.subjects:
                    continue
                for method in ("kmeans", "priors"):
                    rows.append({"dataset": name, **run_scan(bids, base / name, label, method,
                                                             args.sloppy)})
                if label.startswith("IXI"):
                    rows.append({"dataset": name, "split": rows[-1]["split"],
                                 **muse_fractions(label)})
                if args.keep:  # a crash later on keeps the rows so far
                    pd.DataFrame(rows).to_csv(args.keep / "rows.csv", index=False)
        table = pd.DataFrame(rows)
        with pd.option_context("display.width", 250, "display.max_columns", 40):
            print(table.drop(columns=["flags"], errors="ignore").round(3).to_string(index=False))
            summary(table)


if __name__ == "__main__":
    main()
