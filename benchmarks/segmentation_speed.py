"""Segmentation settings side by side, in one run: seconds and quality per scan and variant.

For each scan, validation, N4, registration and the brain mask run once; then every variant of
``SegmentationSettings`` segments the same inputs. Quality: GM/WM Dice (> 0.5) against DLMUSE
for the IXI scans (the REPORT split apart from the SELECTION split, as
``benchmarks/real_scans.py``), GM Dice against the truth for the 1 mm SYNTHETIC subject, and
GM/WM/CSF fractions of the brain for the ds002748 scans (a collapsed segmentation shows as a
fraction far off). Prints figures; asserts nothing.

Run: ``.venv/bin/python benchmarks/segmentation_speed.py [--scans ixi ds002748 synthetic]
[--variants NAME ...]`` (alone on the machine).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

SHARED = Path(__file__).resolve().parents[2] / "shared"
os.environ.setdefault("TEMPLATEFLOW_HOME", str(SHARED / "templateflow"))
IXI = SHARED / "data" / "whole-head" / "ixi_2mm"
DS002748 = SHARED / "data" / "ds002748-subset"
REPORT_DS = ("03", "12")  # ds002748 scans outside the selection split (02, 14, 16)
SELECTION_IXI = {"IXI012", "IXI013", "IXI014", "IXI015", "IXI033"}
ROWS: list[dict] = []

from bids_mdd.preproc import ants_steps  # noqa: E402
from bids_mdd.preproc.qc import dice  # noqa: E402

BASE = ants_steps.SegmentationSettings()
VARIANTS = {
    # the settings before the speed work: 5 Atropos iterations at native resolution
    "before": replace(BASE, iterations=5, atropos_mm=None, icm_synchronous=False),
    "current": BASE,
    "iter3": replace(BASE, iterations=3, atropos_mm=None, icm_synchronous=False),
    "1.5mm": replace(BASE, iterations=5, atropos_mm=1.5),
    "1.5mm-iter3": replace(BASE, iterations=3, atropos_mm=1.5),
    "1.2mm": replace(BASE, iterations=5, atropos_mm=1.2),
    "sync": replace(BASE, iterations=5, atropos_mm=None, icm_synchronous=True),
    "sync-iter3": replace(BASE, iterations=3, atropos_mm=None, icm_synchronous=True),
}


def ixi_scans() -> list[tuple[str, Path]]:
    return [(re.sub(r"-.*", "", p.name), p) for p in sorted(IXI.glob("IXI*-T1_ds.nii.gz"))]


def ds_scans() -> list[tuple[str, Path]]:
    return [(f"ds-{label}", DS002748 / f"sub-{label}" / "anat" / f"sub-{label}_T1w.nii.gz")
            for label in REPORT_DS]


def synthetic_scan(root: Path) -> tuple[str, Path, Path]:
    from bids_mdd.synth.cohort import generate_cohort
    from bids_mdd.synth.model import CohortSpec

    generate_cohort(root, CohortSpec(n_mdd=0, n_hc=1, seed=11, resolution=1.0), n_jobs=1)
    truth = root / "derivatives/synthetic-truth/sub-001/anat/sub-001_label-GM_probseg.nii.gz"
    return "synthetic", root / "sub-001/anat/sub-001_T1w.nii.gz", truth


def ixi_reference(label: str, like: str) -> dict[str, np.ndarray]:
    """DLMUSE's GM and WM of an IXI scan on the grid of ``like`` (``real_scans``' labels)."""
    from nilearn.image import resample_to_img

    from real_scans import muse_labels  # benchmarks/real_scans.py

    seg = next((IXI / "dlmuse_seg").glob(f"{label}-*_DLMUSE.nii.gz"))
    labels = np.asarray(resample_to_img(seg, nib.load(like), interpolation="nearest",
                                        force_resample=True, copy_header=True).dataobj)
    return {tissue: np.isin(labels, muse_labels(tissue)) for tissue in ("GM", "WM")}


def prepared(path: Path, tmp: str) -> tuple[str, str, str]:
    """N4-corrected T1w, its brain mask and the registration's inverse transform."""
    from bids_mdd.spaces.templates import template_brain_mask, template_t1w

    template, template_mask = str(template_t1w()), str(template_brain_mask())
    t1w = ants_steps.validate_t1w(str(path), tmp)
    stripped = ants_steps.is_skull_stripped(t1w)
    n4 = ants_steps.n4_correct(t1w, tmp)
    registration = ants_steps.register_to_template(n4, template, template_mask, stripped, tmp)
    mask, _ = ants_steps.brain_mask(n4, template_mask, registration.inverse, stripped, tmp, 2)
    return n4, mask, registration.inverse


def load(path: str) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj, dtype=np.float32)


def measure(label: str, path: Path, variants: list[str], truth: Path | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        n4, mask, inverse = prepared(path, tmp)
        reference = ixi_reference(label, n4) if label.startswith("IXI") else None
        inside = load(mask) > 0
        for name in variants:
            out = Path(tmp) / name
            out.mkdir()
            start = time.perf_counter()
            csf, gm, wm = ants_steps.segment_tissues(n4, mask, str(out), VARIANTS[name], inverse)
            seconds = time.perf_counter() - start
            gm_map, wm_map, csf_map = load(gm), load(wm), load(csf)
            line = (f"{label:10s} {name:12s} {seconds:6.1f} s  fractions "
                    f"GM {gm_map[inside].mean():.3f} WM {wm_map[inside].mean():.3f} "
                    f"CSF {csf_map[inside].mean():.3f}")
            row = {"scan": label, "variant": name, "seconds": seconds}
            if reference is not None:
                row.update(gm=dice(gm_map > 0.5, reference["GM"]),
                           wm=dice(wm_map > 0.5, reference["WM"]))
                line += f"  Dice GM {row['gm']:.4f} WM {row['wm']:.4f}"
            ROWS.append(row)
            if truth is not None:
                line += f"  Dice GM vs truth {dice(gm_map > 0.5, load(str(truth)) > 0.5):.4f}"
            print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scans", nargs="+", default=["synthetic", "ds002748", "ixi"],
                        choices=("synthetic", "ds002748", "ixi"))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs; variants: " + "; ".join(
        f"{name}: iterations {VARIANTS[name].iterations}, Atropos at "
        f"{VARIANTS[name].atropos_mm or 'native'} mm, ICM "
        f"{'synchronous' if VARIANTS[name].icm_synchronous else 'asynchronous'}"
        for name in args.variants))
    with tempfile.TemporaryDirectory() as tmp:
        if "synthetic" in args.scans:
            label, path, truth = synthetic_scan(Path(tmp) / "synthetic")
            measure(label, path, args.variants, truth)
        for scans, wanted in ((ds_scans, "ds002748"), (ixi_scans, "ixi")):
            if wanted in args.scans:
                for label, path in scans():
                    measure(label, path, args.variants, None)
    summary(args.variants)


def summary(variants: list[str]) -> None:
    """Per variant: mean seconds, and the IXI report split's GM/WM Dice (mean, min)."""
    for name in variants:
        rows = [row for row in ROWS if row["variant"] == name]
        report = [row for row in rows if "gm" in row and row["scan"] not in SELECTION_IXI]
        line = f"{name:12s} mean {np.mean([row['seconds'] for row in rows]):6.1f} s"
        if report:
            gm, wm = [row["gm"] for row in report], [row["wm"] for row in report]
            line += (f"; IXI report split ({len(report)}): GM Dice mean {np.mean(gm):.4f} "
                     f"min {np.min(gm):.4f}, WM mean {np.mean(wm):.4f} min {np.min(wm):.4f}")
        print(line)


if __name__ == "__main__":
    main()
