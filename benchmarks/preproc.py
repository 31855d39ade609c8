"""Wall time and peak memory of each preprocessing step, and quality, for one 1 mm whole-head
SYNTHETIC subject on this machine (default mode; ``--sloppy`` as the first argument for the
test mode). Prints figures; asserts nothing.

Run: ``.venv/bin/python benchmarks/preproc.py [--sloppy] [--subjects N] [--scan T1W]
[--against REV]``. With ``--scan`` the steps run on that real scan instead (times, and the
tissue fractions of the brain, where a collapsed segmentation shows); ``BIDS_MDD_PROFILE=1``
prints each step's costliest calls (cProfile, by own time). With ``--subjects N`` the first
subject is timed step by step and subjects 2..N (other random deformations) are only
registered, for the known-warp Dice of each and its spread. ``--against REV`` first runs the
same measurement with bids_mdd as it was at git revision REV (a temporary worktree on
``PYTHONPATH``), so that old and new code are compared in one run.
"""

from __future__ import annotations

import cProfile
import io
import multiprocessing as mp
import os
import pstats
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_mdd.preproc.qc import dice

os.environ.setdefault("TEMPLATEFLOW_HOME",
                      str(Path(__file__).resolve().parents[2] / "shared" / "templateflow"))


def _timed(step: str, args: tuple) -> tuple[object, float, float]:
    from bids_mdd.preproc import ants_steps
    from bids_mdd.spaces.grids import CLASSIFIER_GRID, DFRN_GRID

    grids = {"classifier": CLASSIFIER_GRID, "dfrn": DFRN_GRID}
    args = tuple(grids.get(a, a) if isinstance(a, str) else a for a in args)
    profiler = cProfile.Profile() if os.environ.get("BIDS_MDD_PROFILE") else None
    start = time.perf_counter()
    if profiler:
        profiler.enable()
    result = getattr(ants_steps, step)(*args)
    seconds = time.perf_counter() - start
    if profiler:
        profiler.disable()
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(8)
        lines = [line for line in text.getvalue().splitlines() if line.strip()][-9:]
        print("\n".join(f"    {line}" for line in lines), flush=True)
    return result, seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_step(step: str, *args) -> object:
    """Run one step in a fresh process, so its peak memory is its own."""
    with mp.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        result, seconds, peak_mb = pool.apply(_timed, (step, args))
    run_step.total += seconds
    print(f"{step:24s} {seconds:7.1f} s   peak {peak_mb:7.0f} MB", flush=True)
    return result


run_step.total = 0.0


def template_gm(template: str, template_mask: str) -> np.ndarray:
    """The template GM the synthetic generator starts from (> 0.5), on the classifier grid."""
    from nilearn.image import resample_to_img

    from bids_mdd.spaces.grids import CLASSIFIER_GRID
    from bids_mdd.synth.tissue import tissue_maps

    t1w = nib.load(template)
    brain = np.asarray(nib.load(template_mask).dataobj) > 0
    gm = tissue_maps(np.asarray(t1w.dataobj, np.float32), brain).of("GM")
    return resample_to_img(nib.Nifti1Image(gm, t1w.affine), CLASSIFIER_GRID.image(),
                           force_resample=True, copy_header=True).get_fdata() > 0.5


def known_warp_dice(truth_gm: str, forward: str, template: str, template_mask: str) -> float:
    """The subject's true GM brought into MNI by our registration, against the template GM
    the generator started from (both > 0.5)."""
    import ants

    from bids_mdd.spaces.grids import CLASSIFIER_GRID

    domain = ants.from_nibabel_nifti(CLASSIFIER_GRID.image())
    warped = ants.apply_transforms(domain, ants.image_read(truth_gm), [forward]).numpy()
    return dice(warped > 0.5, template_gm(template, template_mask))


def main(sloppy: bool, n_subjects: int) -> None:
    from bids_mdd.preproc.ants_steps import PreprocSettings
    from bids_mdd.spaces.templates import template_brain_mask, template_t1w
    from bids_mdd.synth.cohort import generate_cohort
    from bids_mdd.synth.model import CohortSpec

    template, template_mask = str(template_t1w()), str(template_brain_mask())
    settings = PreprocSettings.for_mode(sloppy)
    with tempfile.TemporaryDirectory() as tmp:
        bids = Path(tmp) / "bids"
        # known warps only: no GM scaling, so a perfect registration gives the template GM back
        spec = CohortSpec(n_mdd=0, n_hc=n_subjects, seed=11, resolution=1.0, gm_baseline_loss=0.0,
                          regional_gm_sd=1e-9, effect_size=0.0)
        generate_cohort(bids, spec, n_jobs=min(2, n_subjects))
        truth = bids / "derivatives/synthetic-truth/sub-001/anat/sub-001_"
        print(f"SYNTHETIC whole-head subject, 1 mm, {'sloppy' if sloppy else 'default'} mode,"
              f" {os.cpu_count()} CPUs")
        _, reg, mask, gm, modulated = all_steps(str(bids / "sub-001/anat/sub-001_T1w.nii.gz"),
                                                tmp, sloppy)

        load = lambda p: np.asarray(nib.load(str(p)).dataobj, dtype=np.float32)  # noqa: E731
        native_ml = load(gm).sum() / 1000
        mni_ml = load(modulated).sum() * 1.5**3 / 1000
        print(f"GM native {native_ml:.0f} mL, modulated in MNI {mni_ml:.0f} mL "
              f"(ratio {mni_ml / native_ml:.4f})")
        mask_dice = dice(load(mask) > 0.5, load(f"{truth}desc-brain_mask.nii.gz") > 0)
        gm_dice = dice(load(gm) > 0.5, load(f"{truth}label-GM_probseg.nii.gz") > 0.5)
        print(f"brain-mask Dice vs truth {mask_dice:.4f}")
        print(f"GM Dice (> 0.5) vs truth, native {gm_dice:.4f}")
        dices = [known_warp_dice(f"{truth}label-GM_probseg.nii.gz", reg.forward, template,
                                 template_mask)]
        print(f"known-warp GM Dice in MNI (true GM through our transform vs template GM): "
              f"{dices[0]:.4f}", flush=True)
        for index in range(2, n_subjects + 1):
            label = f"{index:03d}"
            subject = bids / f"sub-{label}/anat/sub-{label}_"
            subject_truth = bids / f"derivatives/synthetic-truth/sub-{label}/anat/sub-{label}_"
            n4 = run_step("n4_correct", str(subject) + "T1w.nii.gz", tmp, settings.n4_field_mm)
            reg = run_step("register_to_template", n4, template, template_mask, False, tmp, 0,
                           settings.registration)
            dices.append(known_warp_dice(f"{subject_truth}label-GM_probseg.nii.gz", reg.forward,
                                         template, template_mask))
            print(f"sub-{label} known-warp GM Dice {dices[-1]:.4f}", flush=True)
        if len(dices) > 1:
            print(f"known-warp GM Dice over {len(dices)} subjects: mean {np.mean(dices):.4f}, "
                  f"SD {np.std(dices, ddof=1):.4f}, min {np.min(dices):.4f}")


def all_steps(path: str, tmp: str, sloppy: bool) -> tuple:
    """Every step on one T1w, each timed; the N4 image, registration, mask, GM and modulated
    GM."""
    from bids_mdd.preproc import ants_steps
    from bids_mdd.spaces.templates import template_brain_mask, template_t1w

    template, template_mask = str(template_t1w()), str(template_brain_mask())
    settings = ants_steps.PreprocSettings.for_mode(sloppy)
    t1w = run_step("validate_t1w", path, tmp)
    stripped = run_step("is_skull_stripped", t1w)
    n4 = run_step("n4_correct", t1w, tmp, settings.n4_field_mm)
    reg = run_step("register_to_template", n4, template, template_mask, stripped, tmp, 0,
                   settings.registration)
    mask, how = run_step("brain_mask", n4, template_mask, reg.inverse, stripped, tmp, 2)
    print(f"  brain mask: {how}")
    csf, gm, wm = run_step("segment_tissues", n4, mask, tmp, settings.segmentation, reg.inverse)
    modulated = run_step("modulated_gm", gm, reg.forward, "classifier", tmp)
    run_step("normalized_t1w", n4, mask, reg.forward, "dfrn", tmp)
    print(f"{'total':24s} {run_step.total:7.1f} s")
    load = lambda p: np.asarray(nib.load(str(p)).dataobj, dtype=np.float32)  # noqa: E731
    inside = load(mask) > 0
    print("tissue fractions of the brain: " + ", ".join(
        f"{name} {load(path)[inside].mean():.3f}" for name, path in
        (("GM", gm), ("WM", wm), ("CSF", csf))), flush=True)
    return n4, reg, mask, gm, modulated


def run_against(revision: str, arguments: list[str]) -> None:
    """This script, as it is, on bids_mdd as it was at ``revision``."""
    repo = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as scratch:
        tree = Path(scratch) / "tree"
        subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", "--quiet",
                        str(tree), revision], check=True)
        try:
            print(f"=== bids_mdd at {revision}", flush=True)
            subprocess.run([sys.executable, __file__, *arguments], check=True,
                           env={**os.environ, "PYTHONPATH": str(tree)})
        finally:
            subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(tree)],
                           check=True)
    head = subprocess.run(["git", "-C", str(repo), "describe", "--always", "--dirty"],
                          capture_output=True, text=True, check=True).stdout.strip()
    print(f"=== bids_mdd as checked out ({head})", flush=True)


if __name__ == "__main__":
    arguments = sys.argv[1:]
    if "--against" in arguments:
        at = arguments.index("--against")
        run_against(arguments[at + 1], arguments[:at] + arguments[at + 2:])
        del arguments[at:at + 2]
    count = int(arguments[arguments.index("--subjects") + 1]) if "--subjects" in arguments else 1
    if "--scan" in arguments:
        scan = arguments[arguments.index("--scan") + 1]
        print(f"{scan}, {os.cpu_count()} CPUs")
        with tempfile.TemporaryDirectory() as scratch:
            all_steps(scan, scratch, sloppy="--sloppy" in arguments)
    else:
        main(sloppy="--sloppy" in arguments, n_subjects=count)
