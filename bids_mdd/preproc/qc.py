"""Quality-control metrics of one preprocessed T1w, with flags for implausible values."""

from __future__ import annotations

import os
from typing import Any

import nibabel as nib
import numpy as np
from nilearn.image import load_img, resample_to_img

from bids_mdd.spaces.grids import Grid

#: Plausible ranges (adult brains); a value outside raises a flag in desc-qc_metrics.json.
#: They enclose what the real scans of ``benchmarks/real_scans.py`` give with some margin (the
#: figures: docs/benchmarks.md) and exclude what failures give: a failed registration's
#: template correlation, a collapsed segmentation's WM fraction.
PLAUSIBLE = {
    "tiv_ml": (1000.0, 2000.0),
    "gm_fraction": (0.35, 0.60),
    "wm_fraction": (0.25, 0.50),
    "csf_fraction": (0.05, 0.30),
    "template_ncc": (0.60, 1.0),
    "template_mask_dice": (0.90, 1.0),
}
#: Under this WM fraction of TIV the tissue classes have shifted (a "GM" map that is WM).
COLLAPSED_WM_FRACTION = 0.25
#: The QC gate: outside these the outputs are garbage (a participant fails; the group level
#: leaves it out). Set well outside what real scans and the SYNTHETIC test cohorts give (the
#: figures: docs/benchmarks.md), so that only a failure crosses them: a header with a wrong
#: voxel size, say, shows as an impossible TIV even when every other metric looks normal.
HARD_LIMITS = {
    "tiv_ml": (800.0, 2500.0),
    "gm_fraction": (0.30, 0.70),
    "wm_fraction": (0.20, 0.55),
    "csf_fraction": (0.03, 0.35),
    "template_ncc": (0.50, 1.0),
    "template_mask_dice": (0.85, 1.0),
}


def gate_failures(metrics: dict[str, Any]) -> list[str]:
    """The QC gate: each metric outside :data:`HARD_LIMITS` (NaN included), as text; a metric
    the file does not hold is not judged."""
    failures = []
    for name, (low, high) in HARD_LIMITS.items():
        value = metrics.get(name)
        if value is None:
            continue
        if not isinstance(value, (int, float)) or not low <= value <= high:
            failures.append(f"{name} {value} outside {low:g}-{high:g}")
    return failures


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient of two boolean arrays."""
    total = a.sum() + b.sum()
    return float(2.0 * np.logical_and(a, b).sum() / total) if total else float("nan")


def normalized_correlation(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Pearson correlation of ``a`` and ``b`` inside ``mask``."""
    return float(np.corrcoef(a[mask].astype(float), b[mask].astype(float))[0, 1])


def _volume_ml(path: str) -> float:
    image = nib.load(path)
    voxel_ml = abs(np.linalg.det(image.affine[:3, :3])) / 1000.0
    return float(np.asarray(image.dataobj, dtype=np.float64).sum() * voxel_ml)


def qc_metrics(mask: str, csf: str, gm: str, wm: str, t1w_mni: str, template_on_grid: str,
               template_mask_on_grid: str) -> dict[str, Any]:
    """TIV and tissue volumes (mL), registration quality, and flags for values out of range.

    TIV is the native brain-mask volume; ``template_ncc`` is the correlation of the MNI-space
    T1w with the template inside the template's brain mask; ``template_mask_dice`` is the
    Dice of the warped brain (non-zero MNI-space T1w) with the template brain mask.
    """
    tiv = _volume_ml(mask)
    volumes = {"csf_ml": _volume_ml(csf), "gm_ml": _volume_ml(gm), "wm_ml": _volume_ml(wm)}
    subject = np.asarray(nib.load(t1w_mni).dataobj, dtype=np.float32)
    template = np.asarray(nib.load(template_on_grid).dataobj, dtype=np.float32)
    template_mask = np.asarray(nib.load(template_mask_on_grid).dataobj) > 0.5
    metrics: dict[str, Any] = {
        "tiv_ml": round(tiv, 1),
        **{k: round(v, 1) for k, v in volumes.items()},
        "gm_fraction": round(volumes["gm_ml"] / tiv, 4),
        "wm_fraction": round(volumes["wm_ml"] / tiv, 4),
        "csf_fraction": round(volumes["csf_ml"] / tiv, 4),
        "template_ncc": round(normalized_correlation(subject, template, template_mask), 4),
        "template_mask_dice": round(dice(subject != 0, template_mask), 4),
    }
    metrics["flags"] = [f"{name} {metrics[name]} outside plausible range {low}-{high}"
                        for name, (low, high) in PLAUSIBLE.items()
                        if not low <= metrics[name] <= high]
    metrics["qc_failures"] = gate_failures(metrics)
    metrics["tissue_collapse"] = metrics["wm_fraction"] < COLLAPSED_WM_FRACTION
    if metrics["tissue_collapse"]:
        metrics["flags"].insert(0, f"tissue collapse: WM is {metrics['wm_fraction']} of TIV "
                                   f"(< {COLLAPSED_WM_FRACTION}); the GM map is likely another "
                                   "tissue: look at the segmentation figure")
    return metrics


def template_on_grid(template: str, template_mask: str, grid: Grid, out_dir: str
                     ) -> tuple[str, str]:
    """The template T1w and brain mask resampled onto ``grid`` (files in ``out_dir``)."""
    paths = []
    for source, name, interpolation in ((template, "template_on_grid.nii.gz", "continuous"),
                                        (template_mask, "template_mask_on_grid.nii.gz",
                                         "nearest")):
        # float32 first: nilearn warns when it casts the int16 template itself
        image = load_img(source, dtype=np.float32 if interpolation == "continuous" else None)
        resampled = resample_to_img(image, grid.image(), interpolation=interpolation,
                                    force_resample=True, copy_header=True)
        path = os.path.join(out_dir, name)
        resampled.to_filename(path)
        paths.append(path)
    return paths[0], paths[1]
