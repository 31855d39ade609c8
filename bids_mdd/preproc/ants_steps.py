"""The preprocessing steps, as plain functions over files, built on antspyx (ANTs compiled in).

Each function reads its inputs from paths, writes its outputs into ``out_dir`` and returns their
paths, so nipype nodes can wrap it and cache by input hash. Registration runs at a reduced
resolution (2 mm by default, 4 mm with ``sloppy``); its transforms are then applied to the full
resolution images.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import ants
import nibabel as nib
import numpy as np

from bids_mdd.preproc.grids import Grid
from bids_mdd.preproc.inputs import load_t1w

#: Non-zero volume (mL) under which an input counts as already skull-stripped: a brain is
#: ~1.0-1.8 L, a whole head with neck and background noise far more.
SKULL_STRIPPED_MAX_ML = 2500.0


@dataclass(frozen=True)
class RegistrationSettings:
    """Resolution (mm), SyN metric and iterations per level of the template registration.

    Default: cross-correlation (radius 2) at 2 mm. On 1 mm synthetic subjects it gave a
    known-warp GM Dice of 0.952 in 61 s (Mattes at 2 mm, 100x70x40 iterations: 0.93);
    see benchmarks/preproc.py.
    """

    resolution: float
    syn_iterations: tuple[int, ...]
    syn_metric: str
    syn_sampling: int  # CC radius in voxels, or Mattes histogram bins

    @classmethod
    def for_mode(cls, sloppy: bool) -> RegistrationSettings:
        if sloppy:
            return cls(4.0, (30, 10), "mattes", 32)
        return cls(2.0, (50, 30, 10), "CC", 2)


def _to_ants(path: str | Path) -> ants.ANTsImage:
    return ants.image_read(str(path))


def _write(image: ants.ANTsImage, out_dir: str | Path, name: str) -> str:
    path = str(Path(out_dir) / name)
    ants.image_write(image, path)
    return path


def set_threads(n_threads: int | None) -> None:
    """Limit ITK's threads (antspyx reads this variable when it starts a filter)."""
    if n_threads:
        os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(n_threads)


def validate_t1w(in_file: str, out_dir: str) -> str:
    """Checked, squeezed, RAS-reoriented float32 copy of the input T1w."""
    image = load_t1w(in_file)
    path = str(Path(out_dir) / "t1w_ras.nii.gz")
    nib.save(image, path)
    return path


def is_skull_stripped(in_file: str) -> bool:
    """True when the non-zero part of the image is brain-sized (see SKULL_STRIPPED_MAX_ML)."""
    image = nib.load(in_file)
    voxel_ml = abs(np.linalg.det(image.affine[:3, :3])) / 1000.0
    return float(np.count_nonzero(np.asarray(image.dataobj)) * voxel_ml) < SKULL_STRIPPED_MAX_ML


def n4_correct(in_file: str, out_dir: str, sloppy: bool = False) -> str:
    """N4 bias-field correction; the field is estimated on a 2 mm (4 mm sloppy) copy."""
    image = _to_ants(in_file)
    step = 4.0 if sloppy else 2.0
    coarse = ants.resample_image(image, (step,) * 3, False, 0)
    head = ants.get_mask(coarse, cleanup=0)
    field = ants.n4_bias_field_correction(
        coarse, mask=head, return_bias_field=True,
        convergence={"iters": [50, 50, 30], "tol": 1e-7})
    inside = field.numpy()[head.numpy() > 0]
    reference = float(np.median(inside)) if inside.size else 1.0
    field = ants.resample_image_to_target(field, image, interp_type="linear").numpy()
    # the field is only fitted inside the head mask; outside it may drop to 0: bound it
    field = np.clip(field, 0.25 * reference, 4.0 * reference) / reference
    corrected = image.new_image_like((image.numpy() / field).astype(np.float32))
    return _write(corrected, out_dir, "t1w_n4.nii.gz")


@dataclass(frozen=True)
class Registration:
    """Files of a T1w -> template registration (ANTs composite transforms)."""

    forward: str  # template -> T1w points: resamples T1w images onto template grids
    inverse: str  # T1w -> template points: resamples template images onto the T1w grid


def register_to_template(in_file: str, template: str, template_mask: str, skull_stripped: bool,
                         out_dir: str, sloppy: bool = False, seed: int = 0) -> Registration:
    """Affine then SyN registration of the bias-corrected T1w to the template.

    A skull-stripped input is registered to the brain-extracted template; a whole head is
    registered head-to-head for the affine, then with the SyN metric restricted to the
    template's brain mask.
    """
    # antspyx has no per-call seed; set_ants_deterministic() would also pin ITK to one thread.
    ants.config._random_seed = seed
    settings = RegistrationSettings.for_mode(sloppy)
    spacing = (settings.resolution,) * 3
    fixed_head = ants.resample_image(_to_ants(template), spacing, False, 0)
    fixed_mask = ants.resample_image(_to_ants(template_mask), spacing, False, 1)
    fixed_brain = fixed_head * fixed_mask
    moving = ants.resample_image(_to_ants(in_file), spacing, False, 0)
    prefix = str(Path(out_dir) / "t1w_to_template_")
    affine = ants.registration(fixed_brain if skull_stripped else fixed_head, moving,
                               type_of_transform="Affine", aff_metric="mattes",
                               outprefix=prefix + "affine_")
    syn = ants.registration(fixed_brain, moving, type_of_transform="SyNOnly",
                            initial_transform=affine["fwdtransforms"][0], mask=fixed_mask,
                            reg_iterations=settings.syn_iterations, outprefix=prefix,
                            syn_metric=settings.syn_metric, syn_sampling=settings.syn_sampling,
                            write_composite_transform=True)
    return Registration(forward=syn["fwdtransforms"], inverse=syn["invtransforms"])


def brain_mask(t1w: str, template_mask: str, registration_inverse: str, skull_stripped: bool,
               out_dir: str) -> str:
    """Native brain mask: the input's non-zero voxels when skull-stripped, else the template
    mask brought through the registration (antspyx has no brain-extraction function)."""
    image = _to_ants(t1w)
    if skull_stripped:
        mask = ants.threshold_image(image, 1e-6, float(image.max()) + 1, 1, 0)
        mask = ants.iMath(mask, "FillHoles")
    else:
        warped = ants.apply_transforms(image, _to_ants(template_mask), [registration_inverse],
                                       interpolator="linear")
        mask = ants.threshold_image(warped, 0.5, 2.0, 1, 0)
    return _write(mask, out_dir, "brain_mask.nii.gz")


def segment_tissues(t1w: str, mask: str, out_dir: str, sloppy: bool = False
                    ) -> tuple[str, str, str]:
    """Three-class Atropos segmentation (k-means init, MRF) -> CSF, GM, WM probabilities."""
    image, brain = _to_ants(t1w), _to_ants(mask)
    with _scratch_tempdir(out_dir):
        result = ants.atropos(a=image, x=brain, i="Kmeans[3]", m="[0.1,1x1x1]",
                              c="[2,0]" if sloppy else "[5,0]")
    names = ("label-CSF_probseg.nii.gz", "label-GM_probseg.nii.gz", "label-WM_probseg.nii.gz")
    # Atropos' k-means classes come sorted by mean intensity: CSF < GM < WM on a T1w
    return tuple(_write(p, out_dir, n) for p, n in zip(result["probabilityimages"], names))


@contextmanager
def _scratch_tempdir(parent: str) -> Iterator[None]:
    """Point ``tempfile`` at a private folder under ``parent`` and delete it afterwards.

    antspyx's ``atropos`` writes its probability images to ``tempfile.mktemp()`` names and
    never removes them (measured: 255 files, 813 MB left in /tmp by our runs); it reads them
    into memory before returning, so the folder can go.
    """
    previous = tempfile.tempdir
    with tempfile.TemporaryDirectory(dir=parent, prefix="ants-scratch-") as scratch:
        tempfile.tempdir = scratch
        try:
            yield
        finally:
            tempfile.tempdir = previous


def _grid_image(grid: Grid) -> ants.ANTsImage:
    return ants.from_nibabel_nifti(grid.image())


def modulated_gm(gm: str, registration_forward: str, grid: Grid, out_dir: str) -> str:
    """GM probability on ``grid`` times the Jacobian determinant of the full transform.

    Modulation keeps each voxel's native GM volume: sum(modulated) * grid voxel volume equals
    the native GM volume (up to what falls outside the grid).
    """
    domain = _grid_image(grid)
    warped = ants.apply_transforms(domain, _to_ants(gm), [registration_forward],
                                   interpolator="linear")
    field = ants.apply_transforms(domain, domain, [registration_forward],
                                  compose=str(Path(out_dir) / "forward_"))
    jacobian = ants.create_jacobian_determinant_image(domain, field, do_log=False)
    return _write(warped * jacobian, out_dir, "gm_modulated.nii.gz")


def normalized_t1w(t1w: str, mask: str, registration_forward: str, grid: Grid, out_dir: str
                   ) -> str:
    """Brain-masked T1w, intensities z-scored inside the brain, resampled onto ``grid``."""
    image, brain = _to_ants(t1w), _to_ants(mask).numpy() > 0
    data = image.numpy()
    values = data[brain]
    normalized = np.where(brain, (data - values.mean()) / (values.std() + 1e-6), 0.0)
    warped = ants.apply_transforms(_grid_image(grid), image.new_image_like(
        normalized.astype(np.float32)), [registration_forward], interpolator="linear")
    return _write(warped, out_dir, "t1w_mni.nii.gz")
