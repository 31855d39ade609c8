"""Partial-volume tissue fractions from an Atropos posterior and the T1w intensity.

Atropos' posteriors say how likely each voxel is to *be* a class; VBM wants how much of each
voxel *is* grey matter (SPM/CAT12 maps are fractions, which modulation turns into volume). At
1-2 mm most cortical voxels mix tissues, so the fraction comes from the intensity between two
pure-tissue means, as in FSL FAST's and CAT12's partial-volume models:

- pure means: the median intensity of each class's interior (voxels whose 6-neighbours share
  their hard label and whose posterior is > 0.9); the GM mean of a voxel is the posterior-
  weighted mean of the three GM classes (cortical, deep, cerebellar), so the thalamus is
  measured against its own grey, not the cortex's;
- between the CSF and GM means the GM fraction rises from 0 to 1, between the GM and WM means
  the WM fraction does; the other tissue takes the rest.

Both ramps are piecewise linear, 0.5 at a "half point" (a fraction of the way between the two
means). A linear ramp would put it at 0.5; DLMUSE, the reference we measure against, labels
sulcal partial-volume voxels grey matter. The half points are chosen on the selection split
(IXI 5 of 10 + ds002748 sub-02/14/16; ``benchmarks/real_scans.py`` reports the other scans)
together with the tissue-weighted N4 pass of ``ants_steps.SegmentationSettings``, which
brightens white matter: ``csf_gm_half`` 0.15 and ``gm_wm_half`` 0.6 give the best mean GM+WM
Dice (0.806, 0.825) among the settings whose mean GM, WM and CSF fractions of ICV all lie within
0.03 of DLMUSE's (0.481/0.400/0.119 against 0.510/0.386/0.104); without that pass 0.25/0.45
gave 0.802/0.815 with CSF 0.033 too high. Pure tissue stays pure either way.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from bids_mdd.errors import BidsMddError, ExitCode

#: Minimum number of interior voxels for a class mean; fewer -> all voxels of that label.
MIN_PURE_VOXELS = 50


def pure_means(intensity: np.ndarray, posteriors: list[np.ndarray], mask: np.ndarray
               ) -> list[float | None]:
    """Median intensity of each class's interior (None for a class without voxels)."""
    labels = np.argmax(np.stack(posteriors), axis=0)
    means: list[float | None] = []
    for index, posterior in enumerate(posteriors):
        hard = mask & (labels == index)
        interior = ndimage.binary_erosion(hard) & (posterior > 0.9)
        chosen = interior if interior.sum() >= MIN_PURE_VOXELS else hard
        means.append(float(np.median(intensity[chosen])) if chosen.any() else None)
    return means


def _ramp(position: np.ndarray, half: float) -> np.ndarray:
    """0 at 0, 0.5 at ``half``, 1 at 1, linear in between, constant outside."""
    return np.interp(position, (0.0, half, 1.0), (0.0, 0.5, 1.0))


def tissue_fractions(intensity: np.ndarray, posteriors: list[np.ndarray], mask: np.ndarray,
                     csf_gm_half: float = 0.15, gm_wm_half: float = 0.6
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, float]]:
    """CSF, GM and WM fractions (summing to 1 in ``mask``) and the pure means used.

    ``posteriors`` are in ``priors.TISSUE_CLASSES`` order: CSF, three GM classes, WM.
    Raises exit 65 when CSF, cortical GM or WM has no voxel (not a brain image).
    """
    means = pure_means(intensity, posteriors, mask)
    csf_mean, cortical, deep, cerebellar, wm_mean = means
    if csf_mean is None or cortical is None or wm_mean is None or not (
            csf_mean < cortical < wm_mean):
        shown = ", ".join("n/a" if m is None else f"{m:.1f}" for m in (csf_mean, cortical,
                                                                          wm_mean))
        raise BidsMddError(f"tissue classes without distinct T1w intensities (CSF < GM < WM "
                           f"expected, means {shown}): not a T1w brain image (noise, another "
                           "contrast?); check the image", ExitCode.BAD_DATA)
    gm_means = [cortical, cortical if deep is None else deep,
                cortical if cerebellar is None else cerebellar]
    gm_posterior = posteriors[1] + posteriors[2] + posteriors[3]
    weighted = sum(p * m for p, m in zip(posteriors[1:4], gm_means))
    gm_mean = np.where(gm_posterior > 1e-6, weighted / np.maximum(gm_posterior, 1e-6), cortical)
    # a GM class brighter than WM (e.g. a pallidum-dominated deep class) must not invert ramps
    gap = wm_mean - csf_mean
    gm_mean = np.clip(gm_mean, csf_mean + 0.1 * gap, wm_mean - 0.1 * gap)
    below = intensity <= gm_mean
    gm_from_csf = _ramp((intensity - csf_mean) / (gm_mean - csf_mean), csf_gm_half)
    wm_from_gm = _ramp((intensity - gm_mean) / (wm_mean - gm_mean), gm_wm_half)
    gm = np.where(below, gm_from_csf, 1.0 - wm_from_gm)
    wm = np.where(below, 0.0, wm_from_gm)
    csf = np.where(below, 1.0 - gm_from_csf, 0.0)
    fractions = [np.where(mask, f, 0.0).astype(np.float32) for f in (csf, gm, wm)]
    used = {"CSF": csf_mean, "GM_cortical": cortical, "GM_deep": gm_means[1],
            "GM_cerebellar": gm_means[2], "WM": wm_mean}
    return fractions[0], fractions[1], fractions[2], used
