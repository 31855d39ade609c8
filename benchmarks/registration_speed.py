"""Registration settings side by side, in one run: seconds and known-warp GM Dice.

SYNTHETIC 1 mm whole-head subjects with known warps (no GM change: a perfect registration
gives the template GM back, as ``benchmarks/preproc.py``); each is N4-corrected once, then
registered with every variant of ``RegistrationSettings``. Known-warp Dice: the subject's true
GM brought into MNI by our transform against the template GM, on the classifier grid. Prints
figures; asserts nothing.

Run: ``.venv/bin/python benchmarks/registration_speed.py [--subjects 3] [--variants NAME ...]``
(alone on the machine).
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
from preproc import known_warp_dice  # noqa: E402  (benchmarks/preproc.py)

from bids_mdd.preproc import ants_steps  # noqa: E402

BASE = ants_steps.RegistrationSettings.for_mode(False)
VARIANTS = {
    # the settings before the speed work: antspyx's affine iterations, SyN on the whole head
    "before": replace(BASE, affine_iterations=(2100, 1200, 1200, 10), syn_margin_mm=None),
    "current": BASE,
    "syn-40x20x8": replace(BASE, syn_iterations=(40, 20, 8)),
}


def main() -> None:
    from bids_mdd.spaces.templates import template_brain_mask, template_t1w
    from bids_mdd.synth.cohort import generate_cohort
    from bids_mdd.synth.model import CohortSpec

    parser = argparse.ArgumentParser()
    parser.add_argument("--subjects", type=int, default=3)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
