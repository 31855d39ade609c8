"""The preprocessing steps, as plain functions over files, built on antspyx (ANTs compiled in).

Each function reads its inputs from paths, writes its outputs into ``out_dir`` and returns their
paths, so nipype nodes can wrap it and cache by input hash. Registration runs at a reduced
resolution (2 mm by default, 4 mm with ``sloppy``); its transforms are then applied to the full
resolution images.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import ants
import nibabel as nib
import numpy as np
from scipy import ndimage

from bids_mdd.preproc.inputs import load_t1w
from bids_mdd.spaces.grids import Grid

#: Non-zero volume (mL) under which an input counts as already skull-stripped: a brain is
#: ~1.0-1.8 L, a whole head with neck and background noise far more.
SKULL_STRIPPED_MAX_ML = 2500.0

Settings = TypeVar("Settings", "RegistrationSettings", "SegmentationSettings")


def settings_to_json(settings: RegistrationSettings | SegmentationSettings) -> str:
    """A step's settings as the JSON string its nipype node takes as an input, so that the
    node's cache hash changes whenever they do."""
    return json.dumps(dataclasses.asdict(settings), sort_keys=True)


def settings_from_json(kind: type[Settings], text: str) -> Settings:
    """The settings :func:`settings_to_json` wrote (JSON lists back to tuples)."""
    values = json.loads(text)
    return kind(**{key: tuple(value) if isinstance(value, list) else value
                   for key, value in values.items()})


@dataclass(frozen=True)
class RegistrationSettings:
    """Resolution (mm), metrics and iterations per level of the template registration.

    Default: SyN with cross-correlation (radius 2) at 2 mm, Mattes MI being clearly worse on
    the known-warp check (``benchmarks/preproc.py``); a shorter affine stage than antspyx's
    and SyN on the template brain's bounding box, which left that check unchanged
    (``benchmarks/registration_speed.py``; figures in docs/benchmarks.md). Radius 1 halves
    SyN's time at the same known-warp and IXI Dice, but moves about 0.015 of the brain from GM
    to CSF on the ds002748 scans, so it is not the default.
    """

    resolution: float
    syn_iterations: tuple[int, ...]
    syn_metric: str
    syn_sampling: int  # CC radius in voxels, or Mattes histogram bins
    # the affine stage (Mattes, 32 bins): iterations, shrink factors and smoothing sigmas
    # (voxels) per level, and the fraction of voxels sampled; antspyx's defaults
    affine_iterations: tuple[int, ...] = (2100, 1200, 1200, 10)
    affine_shrink: tuple[int, ...] = (6, 4, 2, 1)
    affine_smoothing: tuple[int, ...] = (3, 2, 1, 0)
    affine_sampling: float = 0.2
    # SyN on the template cropped to its brain mask's bounding box plus this margin (mm), not
    # on the whole head: the metric only looks inside the mask anyway (None: no crop)
    syn_margin_mm: float | None = None

    def describe(self) -> dict:
        return {"method": "antspyx Affine + SyNOnly", "resolution_mm": self.resolution,
                "syn_iterations": list(self.syn_iterations), "syn_metric": self.syn_metric,
                "syn_sampling": self.syn_sampling,
                "affine_iterations": list(self.affine_iterations),
                "affine_shrink_factors": list(self.affine_shrink),
                "affine_smoothing_sigmas": list(self.affine_smoothing),
                "affine_sampling_rate": self.affine_sampling,
                "syn_domain": ("whole template" if self.syn_margin_mm is None else
                               f"template brain's bounding box + {self.syn_margin_mm:g} mm")}


def _to_ants(path: str | Path) -> ants.ANTsImage:
    return ants.image_read(str(path))


def _write(image: ants.ANTsImage, out_dir: str | Path, name: str) -> str:
    path = str(Path(out_dir) / name)
    ants.image_write(image, path)
    return path


#: Atropos' ``--use-random-seed 0``: ANTs' constant internal seed. Atropos takes no seed value
#: (and ignores ANTS_RANDOM_SEED); without this its result changes from run to run.
ATROPOS_FIXED_SEED = {"r": 0}


def ants_registration_seed(seed: int) -> int:
    """The ``--random-seed`` passed to antsRegistration for bids_mdd's ``seed``.

    antsRegistration treats 0 as "draw a random seed" (two runs differ), so every seed is
    shifted by one: bids_mdd's default seed 0 is ANTs' 1.
    """
    return seed + 1


def set_threads(n_threads: int | None) -> None:
    """Limit ITK's threads (antspyx reads this variable when it starts a filter)."""
    if n_threads:
        os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(n_threads)


def validate_t1w(in_file: str, out_dir: str) -> str:
    """Checked, squeezed, RAS-reoriented float32 copy of the input T1w."""
    image = load_t1w(in_file, warn=False)  # the participant level warned already
    # NIfTI units, which load_t1w's new header lacks: without them every ITK read of this copy
    # and of what is made from it prints "NIftI spatial/time units are 'unknown'"
    image.header.set_xyzt_units("mm", "sec")
    path = str(Path(out_dir) / "t1w_ras.nii.gz")
    nib.save(image, path)
    return path


def is_skull_stripped(in_file: str) -> bool:
    """True when the non-zero part of the image is brain-sized (see SKULL_STRIPPED_MAX_ML)."""
    image = nib.load(in_file)
    voxel_ml = abs(np.linalg.det(image.affine[:3, :3])) / 1000.0
    return float(np.count_nonzero(np.asarray(image.dataobj)) * voxel_ml) < SKULL_STRIPPED_MAX_ML


def n4_correct(in_file: str, out_dir: str, field_mm: float = 2.0) -> str:
    """N4 bias-field correction; the field is estimated on a ``field_mm`` copy."""
    image = _to_ants(in_file)
    coarse = ants.resample_image(image, (field_mm,) * 3, False, 0)
    head = ants.get_mask(coarse, cleanup=0)
    field = ants.n4_bias_field_correction(
        coarse, mask=head, return_bias_field=True,
        convergence={"iters": [50, 50, 30], "tol": 1e-7})
    return _write(_divide_by_field(image, field, head.numpy() > 0), out_dir, "t1w_n4.nii.gz")


def _divide_by_field(image: ants.ANTsImage, field: ants.ANTsImage, fitted: np.ndarray
                     ) -> ants.ANTsImage:
    """``image`` divided by a coarse N4 ``field``, scaled to 1 at its median where it was fitted.

    The field is only fitted inside ``fitted`` (a mask on the field's grid); outside it may
    drop to 0, so it is bounded to 0.25-4 times that median.
    """
    values = field.numpy()[fitted]
    reference = float(np.median(values)) if values.size else 1.0
    field = ants.resample_image_to_target(field, image, interp_type="linear").numpy()
    field = np.clip(field, 0.25 * reference, 4.0 * reference) / reference
    return image.new_image_like((image.numpy() / field).astype(np.float32))


@dataclass(frozen=True)
class Registration:
    """Files of a T1w -> template registration (ANTs composite transforms)."""

    forward: str  # template -> T1w points: resamples T1w images onto template grids
    inverse: str  # T1w -> template points: resamples template images onto the T1w grid


def register_to_template(in_file: str, template: str, template_mask: str, skull_stripped: bool,
                         out_dir: str, seed: int = 0,
                         settings: RegistrationSettings | None = None) -> Registration:
    """Affine then SyN registration of the bias-corrected T1w to the template.

    A skull-stripped input is registered to the brain-extracted template; a whole head is
    registered head-to-head for the affine, then with the SyN metric restricted to the
    template's brain mask.
    """
    # antspyx has no per-call seed; set_ants_deterministic() would also pin ITK to one thread.
    ants.config._random_seed = ants_registration_seed(seed)
    settings = settings or PreprocSettings.for_mode(sloppy=False).registration
    spacing = (settings.resolution,) * 3
    fixed_head = ants.resample_image(_to_ants(template), spacing, False, 0)
    fixed_mask = ants.resample_image(_to_ants(template_mask), spacing, False, 1)
    fixed_brain = fixed_head * fixed_mask
    moving = ants.resample_image(_to_ants(in_file), spacing, False, 0)
    prefix = str(Path(out_dir) / "t1w_to_template_")
    affine = ants.registration(fixed_brain if skull_stripped else fixed_head, moving,
                               type_of_transform="Affine", aff_metric="mattes",
                               aff_iterations=settings.affine_iterations,
                               aff_shrink_factors=settings.affine_shrink,
                               aff_smoothing_sigmas=settings.affine_smoothing,
                               aff_random_sampling_rate=settings.affine_sampling,
                               outprefix=prefix + "affine_")
    if settings.syn_margin_mm is not None:
        fixed_brain, fixed_mask = _cropped_to(fixed_mask, settings.syn_margin_mm,
                                              fixed_brain, fixed_mask)
    syn = ants.registration(fixed_brain, moving, type_of_transform="SyNOnly",
                            initial_transform=affine["fwdtransforms"][0], mask=fixed_mask,
                            reg_iterations=settings.syn_iterations, outprefix=prefix,
                            syn_metric=settings.syn_metric, syn_sampling=settings.syn_sampling,
                            write_composite_transform=True)
    return Registration(forward=syn["fwdtransforms"], inverse=syn["invtransforms"])


def _cropped_to(mask: ants.ANTsImage, margin_mm: float, *images: ants.ANTsImage
                ) -> list[ants.ANTsImage]:
    """``images`` cropped to ``mask``'s bounding box grown by ``margin_mm`` on every side."""
    where = np.argwhere(mask.numpy() > 0)
    pad = np.ceil(margin_mm / np.asarray(mask.spacing)).astype(int)
    lower = np.maximum(where.min(axis=0) - pad, 0)
    upper = np.minimum(where.max(axis=0) + pad + 1, mask.shape)
    return [ants.crop_indices(image, lower.tolist(), upper.tolist()) for image in images]


#: deepbet's mask is kept only when it overlaps the registered template mask this much (IXI
#: scans: 0.95-0.97, 0.85 with --sloppy's coarse registration); a failed extraction falls back.
BET_MIN_AGREEMENT = 0.80


def brain_mask(t1w: str, template_mask: str, registration_inverse: str, skull_stripped: bool,
               out_dir: str, n_threads: int = 1) -> tuple[str, str]:
    """Native brain mask, and a sentence saying how it was made.

    Skull-stripped input: its non-zero voxels. Whole head: deepbet's mask
    (``preproc.brain_extraction``; Dice 0.977-0.984 with DLMUSE's intracranial volume on the
    IXI scans, the template mask 0.953-0.967), unless deepbet is missing or its mask disagrees
    with the template mask brought through the registration (Dice < ``BET_MIN_AGREEMENT``):
    then that template mask.
    """
    from bids_mdd.preproc.brain_extraction import deepbet_mask
    from bids_mdd.preproc.qc import dice

    image = _to_ants(t1w)
    if skull_stripped:
        # scipy's hole filling, not iMath's FillHoles: the same holes (background not connected
        # to the border), filled in a fraction of the time on a 1 mm scan
        filled = ndimage.binary_fill_holes(image.numpy() > 1e-6)
        return (_write(image.new_image_like(filled.astype(np.float32)), out_dir,
                       "brain_mask.nii.gz"), "input already skull-stripped: its non-zero voxels")
    warped = ants.apply_transforms(image, _to_ants(template_mask), [registration_inverse],
                                   interpolator="linear")
    mask = ants.threshold_image(warped, 0.5, 2.0, 1, 0)
    method = "MNI152NLin2009cAsym brain mask through the inverse registration"
    extracted, name = deepbet_mask(t1w, n_threads)
    if extracted is None:
        method += f" ({name})"
    elif (agreement := dice(extracted, mask.numpy() > 0)) < BET_MIN_AGREEMENT:
        method += f" (deepbet's mask disagreed with it: Dice {agreement:.3f})"
    else:
        mask = image.new_image_like(extracted.astype(np.float32))
        method = f"{name} (Dice {agreement:.3f} with the registered template mask)"
    return _write(mask, out_dir, "brain_mask.nii.gz"), method


@dataclass(frozen=True)
class SegmentationSettings:
    """Tissue segmentation: ``priors`` (default) or the earlier ``kmeans``.

    ``priors``: a tissue-weighted N4 pass (``_tissue_weighted_n4``: the residual bias of the
    whole-head N4 otherwise turns dark white matter grey), intensities clipped to the
    0.5-99.5th percentiles inside the brain (bright vessels and outliers otherwise pull a class
    off WM), Atropos initialised and constrained by five warped template priors
    (``preproc.priors``) with ``prior_weight`` and an MRF of ``mrf``, then partial-volume
    fractions (``preproc.partial_volume``). Every value was chosen on a selection split of the
    real scans against DLMUSE (``benchmarks/real_scans.py``); the faster variants that moved
    Dice (a coarser Atropos, synchronous ICM updates) are off
    (``benchmarks/segmentation_speed.py``). The figures behind each choice: docs/benchmarks.md.
    """

    method: str = "priors"
    prior_weight: float = 0.5
    mrf: float = 0.1
    iterations: int = 3
    clip_percentiles: tuple[float, float] = (0.5, 99.5)
    csf_gm_half: float = 0.15
    gm_wm_half: float = 0.6
    tissue_weighted_n4: bool = True
    atropos_mm: float | None = None  # Atropos on a copy at this spacing when the scan is finer
    # Atropos' ICM updates every voxel's label at once (synchronous) rather than through its
    # graph-colouring code image (asynchronous, ANTs' default), in about half the time
    icm_synchronous: bool = False

    def describe(self) -> dict:
        if self.method == "kmeans":
            return {"method": "antspyx Atropos, 3 classes, k-means, MRF [0.1,1x1x1]",
                    "iterations": self.iterations}
        return {"method": "antspyx Atropos with template priors (ICBM 2009 GM/WM from nilearn; "
                          "cortical, deep and cerebellar GM classes), partial-volume fractions",
                "prior_weight": self.prior_weight, "mrf": self.mrf,
                "iterations": self.iterations, "clip_percentiles": list(self.clip_percentiles),
                "csf_gm_half": self.csf_gm_half, "gm_wm_half": self.gm_wm_half,
                "tissue_weighted_n4": self.tissue_weighted_n4,
                "atropos_resolution_mm": self.atropos_mm or "native",
                "icm_updates": "synchronous" if self.icm_synchronous else "asynchronous"}


@dataclass(frozen=True)
class PreprocSettings:
    """Every step's settings for one quality mode, decoded from ``--sloppy`` (and
    ``--segmentation``) here and nowhere else: the workflow passes them to its nodes, so that
    nipype's cache follows them, and writes the same objects into the sidecars."""

    n4_field_mm: float  # N4 fits its field on a copy at this spacing
    registration: RegistrationSettings
    segmentation: SegmentationSettings

    @classmethod
    def for_mode(cls, sloppy: bool, segmentation: str = "priors") -> PreprocSettings:
        if sloppy:  # coarse and fast, for tests only
            return cls(4.0, RegistrationSettings(4.0, (30, 10), "mattes", 32),
                       SegmentationSettings(method=segmentation, iterations=2))
        return cls(2.0, RegistrationSettings(2.0, (50, 30, 10), "CC", 2,
                                             affine_iterations=(1000, 500, 250, 0),
                                             syn_margin_mm=10.0),
                   SegmentationSettings(method=segmentation,
                                        iterations=3 if segmentation == "priors" else 5))

    def describe(self) -> dict:
        return {"BiasCorrection": f"antspyx N4, field fitted at {self.n4_field_mm:g} mm",
                "Registration": self.registration.describe(),
                "Segmentation": self.segmentation.describe()}


def segment_tissues(t1w: str, mask: str, out_dir: str, settings: SegmentationSettings,
                    registration_inverse: str | None = None) -> tuple[str, str, str]:
    """CSF, GM and WM maps of the brain (``settings.method``; priors need the registration)."""
    image, brain = _to_ants(t1w), _to_ants(mask)
    names = ("label-CSF_probseg.nii.gz", "label-GM_probseg.nii.gz", "label-WM_probseg.nii.gz")
    if settings.method == "kmeans":
        with _scratch_tempdir(out_dir):
            result = ants.atropos(a=image, x=brain, i="Kmeans[3]", m="[0.1,1x1x1]",
                                  c=f"[{settings.iterations},0]", **ATROPOS_FIXED_SEED)
        # Atropos' k-means classes come sorted by mean intensity: CSF < GM < WM on a T1w
        return tuple(_write(p, out_dir, n) for p, n in zip(result["probabilityimages"], names))
    if registration_inverse is None:
        raise ValueError("prior-based segmentation needs the registration's inverse transform")
    from bids_mdd.preproc.partial_volume import tissue_fractions

    # work inside the brain's bounding box: a 0.9 mm scan is ~70 % background
    cropped, brain = ants.crop_image(image, brain, 1), ants.crop_image(brain, brain, 1)
    if settings.tissue_weighted_n4:
        cropped = _tissue_weighted_n4(cropped, brain, registration_inverse, settings, out_dir)
    inside = brain.numpy() > 0
    clipped = _clipped(cropped, inside, settings.clip_percentiles)
    posteriors = _atropos_posteriors(clipped, brain, registration_inverse, settings, out_dir)
    fractions = tissue_fractions(clipped.numpy(), posteriors, inside, settings.csf_gm_half,
                                 settings.gm_wm_half)
    empty = image.new_image_like(np.zeros(image.shape, np.float32))  # decrop pastes into it
    return tuple(_write(ants.decrop_image(cropped.new_image_like(f), empty), out_dir, n)
                 for f, n in zip(fractions[:3], names))


def _clipped(image: ants.ANTsImage, inside: np.ndarray, percentiles: tuple[float, float]
             ) -> ants.ANTsImage:
    """``image`` clipped to the ``percentiles`` of its brain voxels, 0 outside the brain."""
    data = image.numpy()
    low, high = np.percentile(data[inside], percentiles)
    return image.new_image_like(np.where(inside, np.clip(data, low, high), 0.0)
                                .astype(np.float32))


def _atropos_posteriors(clipped: ants.ANTsImage, brain: ants.ANTsImage,
                        registration_inverse: str, settings: SegmentationSettings,
                        out_dir: str) -> list[np.ndarray]:
    """The five posteriors on ``clipped``'s grid, from Atropos on that grid or, for a scan
    finer than ``settings.atropos_mm``, on a copy at that spacing, brought back linearly
    (the partial-volume fractions are then computed from the native intensities)."""
    spacing = settings.atropos_mm
    if spacing is None or min(clipped.spacing) >= 0.95 * spacing:
        return _atropos_with_priors(clipped, brain, registration_inverse, settings, out_dir)
    coarse = ants.resample_image(clipped, (spacing,) * 3, False, 0)
    coarse_brain = ants.resample_image_to_target(brain, coarse, interp_type="nearestNeighbor")
    posteriors = _atropos_with_priors(coarse, coarse_brain, registration_inverse, settings,
                                      out_dir)
    native = [ants.resample_image_to_target(coarse.new_image_like(p.astype(np.float32)),
                                            clipped, interp_type="linear").numpy()
              for p in posteriors]
    total = np.maximum(sum(np.clip(p, 0.0, None) for p in native), 1e-6)
    return [np.clip(p, 0.0, None) / total for p in native]


def _atropos_with_priors(clipped: ants.ANTsImage, brain: ants.ANTsImage,
                         registration_inverse: str, settings: SegmentationSettings,
                         out_dir: str) -> list[np.ndarray]:
    """The five Atropos posteriors (``preproc.priors`` order) of a clipped ``image``."""
    from bids_mdd.preproc.priors import template_priors

    inside = brain.numpy() > 0
    priors = [ants.apply_transforms(clipped, _from_nibabel(prior),
                                    [registration_inverse], interpolator="linear").numpy()
              for prior in template_priors()]
    total = np.maximum(sum(np.clip(p, 0.0, None) for p in priors), 1e-6)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix="atropos-") as scratch:
        # Atropos reads the priors back from NIfTI files (float32 header): the image and mask
        # must carry the same rounded geometry, or ITK finds them 1e-6 mm apart and refuses
        clipped = _to_ants(_write(clipped, scratch, "clipped.nii"))
        prior_images = [clipped.new_image_like(np.where(inside, np.clip(p, 0.0, None) / total,
                                                        0.0).astype(np.float32))
                        for p in priors]
        return _atropos(clipped, clipped.new_image_like(inside.astype(np.float32)),
                        prior_images, settings, scratch)


def _atropos(image: ants.ANTsImage, mask: ants.ANTsImage, priors: list[ants.ANTsImage],
             settings: SegmentationSettings, scratch: str) -> list[np.ndarray]:
    """Atropos initialised and constrained by ``priors``; its posteriors, in their order.

    The call ``ants.atropos`` makes, with uncompressed files: it hands the priors over and
    gets the posteriors back through ``.nii.gz`` files in /tmp, ten compressions and reads of
    full-resolution images per call.
    """
    from ants.internal import get_lib_fn, get_pointer_string, process_arguments

    pattern = os.path.join(scratch, "prior%02d.nii")  # Atropos overwrites them: posteriors
    for index, prior in enumerate(priors, start=1):
        ants.image_write(prior, pattern % index)
    labels = image.clone("unsigned int")
    arguments = {"d": 3, "a": image, "m": f"[{settings.mrf},1x1x1]",
                 "o": f"[{get_pointer_string(labels)},{pattern}]",
                 "c": f"[{settings.iterations},0]", "x": mask.clone("unsigned int"),
                 "i": f"PriorProbabilityImages[{len(priors)},{pattern},{settings.prior_weight}]",
                 **ATROPOS_FIXED_SEED}
    if settings.icm_synchronous:
        # the option's bare value is its first parameter (Atropos' parser refuses it in brackets)
        arguments["g"] = "0"
    if get_lib_fn("Atropos")(process_arguments(arguments)) != 0:
        raise RuntimeError("Atropos failed")
    return [_to_ants(pattern % index).numpy() for index in range(1, len(priors) + 1)]


def _tissue_weighted_n4(image: ants.ANTsImage, brain: ants.ANTsImage, registration_inverse: str,
                        settings: SegmentationSettings, out_dir: str) -> ants.ANTsImage:
    """``image`` divided by an N4 field fitted on white matter only, as ``antsAtroposN4.sh``.

    The whole-head N4 of ``n4_correct`` fits every tissue at once; a residual field leaves
    white matter darker in some lobes, where it is then labelled grey. A first, coarse (2 mm)
    prior-based Atropos gives the WM posterior; N4 refitted with it as the weight corrects
    what is left. WM alone was chosen on the selection split (GM+WM weights, ANTs' default in
    antsCorticalThickness, gave GM Dice 0.776 against 0.795).
    """
    from bids_mdd.preproc.priors import TISSUE_CLASSES

    coarse = ants.resample_image(image, (2.0,) * 3, False, 0)
    coarse_brain = ants.resample_image_to_target(brain, coarse, interp_type="nearestNeighbor")
    inside = coarse_brain.numpy() > 0
    posteriors = _atropos_with_priors(_clipped(coarse, inside, settings.clip_percentiles),
                                      coarse_brain, registration_inverse, settings, out_dir)
    wm = TISSUE_CLASSES.index("WM")
    field = ants.n4_bias_field_correction(
        coarse, mask=coarse.new_image_like(inside.astype(np.float32)), return_bias_field=True,
        weight_mask=coarse.new_image_like(np.where(inside, posteriors[wm], 0.0)
                                          .astype(np.float32)))
    return _divide_by_field(image, field, inside)


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
    return _from_nibabel(grid.image())


def _from_nibabel(image: nib.Nifti1Image) -> ants.ANTsImage:
    """antspyx's conversion (through a temporary NIfTI file) with the units set, which ITK
    otherwise reports as unknown on every read."""
    header = image.header.copy()
    header.set_xyzt_units("mm", "sec")
    return ants.from_nibabel_nifti(nib.Nifti1Image(np.asanyarray(image.dataobj), image.affine,
                                                   header))


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
