"""Registration settings side by side, in one run: seconds and known-warp GM Dice.

SYNTHETIC 1 mm whole-head subjects with known warps (no GM change: a perfect registration
gives the template GM back, as ``benchmarks/preproc.py``); each is N4-corrected once, then
registered with every variant of ``RegistrationSettings``. Known-warp Dice: the subject's true
GM brought into MNI by our transform against the template GM, on the classifier grid. Prints
figures; asserts nothing.

With ``--ixi``, the 10 real IXI whole-head scans instead: each is registered with every
variant, and its DLMUSE labels (a reference segmentation made by others, in the scan's space)
are brought into MNI through the transform. Alignment across subjects: the Dice of each MUSE
region between every pair of subjects in MNI, averaged over regions, then over pairs (the
inter-subject label overlap of registration evaluations, e.g. Klein et al. 2009), and the GM
Dice of each subject against the template's GM.

Run: ``.venv/bin/python benchmarks/registration_speed.py [--subjects 3] [--ixi]
[--variants NAME ...]`` (alone on the machine).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bids_mdd.preproc import ants_steps
from bids_mdd.preproc.qc import dice
from preproc import known_warp_dice

BASE = ants_steps.PreprocSettings.for_mode(sloppy=False).registration
VARIANTS = {
    # the settings before the speed work: antspyx's affine iterations, SyN on the whole head
    "before": replace(BASE, affine_iterations=(2100, 1200, 1200, 10), syn_margin_mm=None),
    "current": BASE,
    "cc-radius1": replace(BASE, syn_sampling=1),
    "syn-40x20x8": replace(BASE, syn_iterations=(40, 20, 8)),
    "syn-50x30x5": replace(BASE, syn_iterations=(50, 30, 5)),
}


def main() -> None:
    from bids_mdd.spaces.templates import template_brain_mask, template_t1w
    from bids_mdd.synth.cohort import generate_cohort
    from bids_mdd.synth.model import CohortSpec

    parser = argparse.ArgumentParser()
    parser.add_argument("--subjects", type=int, default=3)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--ixi", action="store_true", help="the IXI scans and their DLMUSE labels")
    args = parser.parse_args()
    if args.ixi:
        ixi(args.variants)
        return
    template, template_mask = str(template_t1w()), str(template_brain_mask())
    dices: dict[str, list[float]] = {name: [] for name in args.variants}
    seconds: dict[str, list[float]] = {name: [] for name in args.variants}
    with tempfile.TemporaryDirectory() as tmp:
        bids = Path(tmp) / "bids"
        generate_cohort(bids, CohortSpec(n_mdd=0, n_hc=args.subjects, seed=11, resolution=1.0,
                                         gm_baseline_loss=0.0, regional_gm_sd=1e-9,
                                         effect_size=0.0), n_jobs=1)
        print(f"SYNTHETIC 1 mm subjects, known warps, {os.cpu_count()} CPUs", flush=True)
        for index in range(1, args.subjects + 1):
            label = f"{index:03d}"
            truth = (bids / f"derivatives/synthetic-truth/sub-{label}/anat/"
                     f"sub-{label}_label-GM_probseg.nii.gz")
            n4 = ants_steps.n4_correct(str(bids / f"sub-{label}/anat/sub-{label}_T1w.nii.gz"),
                                       tmp)
            for name in args.variants:
                out = Path(tmp) / f"{label}-{name}"
                out.mkdir()
                start = time.perf_counter()
                reg = ants_steps.register_to_template(n4, template, template_mask, False,
                                                      str(out), settings=VARIANTS[name])
                seconds[name].append(time.perf_counter() - start)
                dices[name].append(known_warp_dice(str(truth), reg.forward, template,
                                                   template_mask))
                print(f"sub-{label} {name:18s} {seconds[name][-1]:6.1f} s  known-warp GM Dice "
                      f"{dices[name][-1]:.4f}", flush=True)
    for name in args.variants:
        print(f"{name:18s} mean {np.mean(seconds[name]):6.1f} s  Dice mean "
              f"{np.mean(dices[name]):.4f} min {np.min(dices[name]):.4f}")


def _region_dice(a: np.ndarray, b: np.ndarray, regions: np.ndarray) -> float:
    """Mean Dice over ``regions`` of two label images (one joint histogram for all)."""
    size = int(max(a.max(), b.max())) + 1
    joint = np.bincount(a.ravel() * size + b.ravel(), minlength=size * size).reshape(size, size)
    both, in_a, in_b = np.diag(joint)[regions], joint.sum(1)[regions], joint.sum(0)[regions]
    present = (in_a + in_b) > 0
    return float(np.mean(2 * both[present] / (in_a + in_b)[present]))


def ixi(variants: list[str]) -> None:
    import ants

    from bids_mdd.spaces.grids import CLASSIFIER_GRID
    from bids_mdd.spaces.templates import template_brain_mask, template_t1w
    from preproc import template_gm  # benchmarks/preproc.py
    from real_scans import IXI, muse_labels  # benchmarks/real_scans.py

    template, template_mask = str(template_t1w()), str(template_brain_mask())
    domain = ants.from_nibabel_nifti(CLASSIFIER_GRID.image())
    reference_gm = template_gm(template, template_mask)
    gm_labels = muse_labels("GM")
    warped: dict[str, list[np.ndarray]] = {name: [] for name in variants}
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    gm_dice: dict[str, list[float]] = {name: [] for name in variants}
    print(f"IXI whole-head scans, DLMUSE labels into MNI, {os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for scan in sorted(IXI.glob("IXI*-T1_ds.nii.gz")):
            label = scan.name.split("-")[0]
            seg = ants.image_read(str(next((IXI / "dlmuse_seg").glob(f"{label}-*"))))
            work = Path(tmp) / label
            work.mkdir()
            n4 = ants_steps.n4_correct(ants_steps.validate_t1w(str(scan), str(work)), str(work))
            for name in variants:
                out = work / name
                out.mkdir()
                start = time.perf_counter()
                reg = ants_steps.register_to_template(n4, template, template_mask, False,
                                                      str(out), settings=VARIANTS[name])
                seconds[name].append(time.perf_counter() - start)
                labels = ants.apply_transforms(domain, seg, [reg.forward],
                                               interpolator="genericLabel").numpy()
                warped[name].append(labels.astype(np.int64))
                gm_dice[name].append(dice(np.isin(labels, gm_labels), reference_gm))
                print(f"{label} {name:14s} {seconds[name][-1]:6.1f} s  GM Dice vs template "
                      f"{gm_dice[name][-1]:.4f}", flush=True)
    regions = np.setdiff1d(np.unique(np.concatenate([np.unique(w) for w in warped[variants[0]]])),
                           [0])
    for name in variants:
        pairs = [_region_dice(a, b, regions) for i, a in enumerate(warped[name])
                 for b in warped[name][i + 1:]]
        print(f"{name:14s} mean {np.mean(seconds[name]):6.1f} s; region Dice between subjects "
              f"({len(regions)} MUSE regions, {len(pairs)} pairs): mean {np.mean(pairs):.4f} "
              f"SD {np.std(pairs, ddof=1):.4f}; GM Dice vs template mean "
              f"{np.mean(gm_dice[name]):.4f} min {np.min(gm_dice[name]):.4f}")


if __name__ == "__main__":
    main()
