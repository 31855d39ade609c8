"""Render one synthetic subject's T1w (and its ground-truth maps) from the MNI template.

Mechanism of the planted effect: **GM partial-volume loss**. In each atlas region the template's
grey-matter partial volume is multiplied by the subject's regional factor (< 1); the lost GM
becomes CSF and the T1w intensity there drops by the GM-CSF difference of the tissue means. A VBM
pipeline sees this as lower GM probability there. The subject then gets a head-size factor, a
smooth nonlinear warp, a rigid pose, a multiplicative bias field and Rician noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np
from scipy.ndimage import gaussian_filter, map_coordinates

from bids_mdd.atlas import Atlas
from bids_mdd.synth.deform import (
    apply_affine,
    centered_grid,
    rigid_matrix,
    smooth_random_field,
    world_coordinates,
)
from bids_mdd.synth.model import CohortSpec, SubjectDraw
from bids_mdd.synth.tissue import tissue_maps


@dataclass(frozen=True)
class TemplateSpace:
    """Template arrays (pre-smoothed for the output resolution), tissue maps and atlas."""

    t1w: np.ndarray
    brain: np.ndarray  # float32, 0/1 before smoothing
    gm: np.ndarray  # GM partial volume
    tissue_means: np.ndarray  # mean T1w intensity of CSF, GM, WM
    affine: np.ndarray
    center_mm: np.ndarray  # centre of the brain mask, world mm
    atlas_labels: np.ndarray
    atlas_affine: np.ndarray


@dataclass(frozen=True)
class SubjectImages:
    """One rendered subject: the T1w and its ground truth, all on the subject's native grid."""

    t1w: np.ndarray
    gm: np.ndarray
    labels: np.ndarray
    brain: np.ndarray
    affine: np.ndarray

    @property
    def voxel_ml(self) -> float:
        return float(abs(np.linalg.det(self.affine[:3, :3]))) / 1000.0

    def nifti(self, name: str) -> nib.Nifti1Image:
        dtype = {"t1w": np.int16, "gm": np.float32, "labels": np.int16, "brain": np.uint8}
        data = getattr(self, name)
        if dtype[name] == np.int16:
            data = np.clip(np.round(data), -32768, 32767)  # scanner-like integer T1w
        image = nib.Nifti1Image(data.astype(dtype[name]), self.affine)
        image.set_qform(self.affine, code=1)
        image.set_sform(self.affine, code=1)
        return image


def prepare_template(t1w_img: nib.Nifti1Image, mask_img: nib.Nifti1Image, atlas: Atlas,
                     resolution: float, seed: int = 0) -> TemplateSpace:
    """Load the template, fit tissue classes and low-pass everything for ``resolution`` mm."""
    t1w = np.asarray(t1w_img.dataobj, dtype=np.float32)
    brain = np.asarray(mask_img.dataobj) > 0
    tissues = tissue_maps(t1w, brain, seed=seed)
    zoom_mm = float(np.abs(np.diag(t1w_img.affine))[:3].mean())
    sigma = 0.0 if resolution <= zoom_mm else np.sqrt(resolution**2 - zoom_mm**2) / 2.355 / zoom_mm
    smooth = (lambda a: gaussian_filter(a, sigma)) if sigma > 0 else (lambda a: a)
    center_vox = np.argwhere(brain).mean(axis=0)
    center_mm = t1w_img.affine[:3, :3] @ center_vox + t1w_img.affine[:3, 3]
    return TemplateSpace(t1w=smooth(t1w).astype(np.float32),
                         brain=smooth(brain.astype(np.float32)),
                         gm=smooth(tissues.of("GM")).astype(np.float32),
                         tissue_means=tissues.means,
                         affine=t1w_img.affine, center_mm=center_mm,
                         atlas_labels=np.asarray(atlas.image.dataobj).astype(np.int32),
                         atlas_affine=atlas.image.affine)


def _sample(volume: np.ndarray, affine: np.ndarray, world: np.ndarray, order: int) -> np.ndarray:
    vox = apply_affine(np.linalg.inv(affine), world)
    return map_coordinates(volume, vox, order=order, mode="constant", cval=0.0, prefilter=False)


def label_lookup(labels: np.ndarray, table: dict[int, float]) -> np.ndarray:
    lut = np.full(max(table) + 1, table[0], dtype=np.float32)
    for index, value in table.items():
        lut[index] = value
    return lut[np.clip(labels, 0, lut.size - 1)]


def render_subject(space: TemplateSpace, spec: CohortSpec, draw: SubjectDraw,
                   gm_scale: dict[int, float], offset_indices: list[int] = ()) -> SubjectImages:
    """Render the subject drawn in ``draw`` with regional GM factors ``gm_scale``.

    ``spec`` is the acquisition's (``site_spec``); a subject with a site also gets its
    scanner's intensity scale and GM-WM contrast, moved further in the atlas labels
    ``offset_indices`` (its site's region), none of which changes the true GM map.
    """
    rng = np.random.default_rng(draw.seed)
    shape, affine = centered_grid(spec.fov_mm, spec.resolution)
    world = world_coordinates(shape, affine)
    # subject -> template: (smooth warp) then (pose) then (1 / head size), about the brain centre
    warp = smooth_random_field(shape, spec.warp_spacing_mm / spec.resolution, spec.warp_sd_mm,
                               rng, n_components=3)
    pose = rigid_matrix(rng.normal(0, spec.rotation_sd_deg, 3),
                        rng.normal(0, spec.translation_sd_mm, 3))
    to_template = np.eye(4)
    to_template[:3, :3] = pose[:3, :3] / draw.head_scale
    to_template[:3, 3] = space.center_mm + pose[:3, 3]
    template_world = apply_affine(to_template, world + warp)
    del world, warp

    t1w = _sample(space.t1w, space.affine, template_world, order=1)
    gm = _sample(space.gm, space.affine, template_world, order=1)
    brain = _sample(space.brain, space.affine, template_world, order=1) > 0.5
    labels = _sample(space.atlas_labels, space.atlas_affine, template_world, order=0)
    labels = labels.astype(np.int32)
    del template_world

    # regional GM partial-volume change; smoothing blurs the 2 mm atlas's blocky edges
    scale = gaussian_filter(label_lookup(labels, gm_scale), 2.0 / spec.resolution)
    lost = gm * np.clip(1.0 - scale, 0.0, 1.0)  # lost GM becomes CSF
    gm_new = gm - lost
    means = space.tissue_means
    t1w = t1w - lost * (means[1] - means[0])
    gain = 1.0
    if draw.site is not None:
        contrast = draw.site.gm_contrast + draw.site.offset * gaussian_filter(
            np.isin(labels, offset_indices).astype(np.float32), 2.0 / spec.resolution)
        t1w = t1w + contrast * gm_new * (means[2] - means[1])
        gain = draw.site.intensity_scale

    bias = np.exp(smooth_random_field(shape, 80.0 / spec.resolution, spec.bias_sd, rng)[0])
    sd = spec.noise_fraction * means[2] * gain
    t1w = t1w * gain
    signal = t1w * bias
    t1w = np.sqrt((signal + rng.normal(0, sd, shape)) ** 2 + rng.normal(0, sd, shape) ** 2)
    if spec.skull_stripped:
        t1w = t1w * brain
    return SubjectImages(t1w=t1w.astype(np.float32), gm=gm_new.astype(np.float32),
                         labels=np.where(brain, labels, 0).astype(np.int16),
                         brain=brain.astype(np.uint8), affine=affine)
