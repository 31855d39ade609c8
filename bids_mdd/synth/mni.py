"""Model inputs of a synthetic subject rendered directly in MNI space (no preprocessing).

For training and testing models at scale without running the participant level on every
synthetic subject: the subject's GM (template GM with its regional factors, scaled by its head
volume as Jacobian modulation would, with smooth multiplicative noise standing in for
segmentation and registration error), smoothed 8 mm on the 1.5 mm grid, and its T1w (GM loss
darkens it; Rician-like noise), brain-masked and z-scored on the 1 mm grid. Written as a
bids_mdd-shaped derivatives dataset labelled SYNTHETIC.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nilearn.image import resample_to_img, smooth_img
from scipy.ndimage import gaussian_filter

from bids_mdd.bids.atomic import write_json
from bids_mdd.bids.derivatives import write_image
from bids_mdd.bids.names import derivative_path
from bids_mdd.bids.outputs import OUTPUTS
from bids_mdd.models.inputs import GM_INPUT, T1W_INPUT
from bids_mdd.spaces.grids import CLASSIFIER_GRID, DFRN_GRID
from bids_mdd.synth.model import CohortSpec, SubjectDraw
from bids_mdd.synth.render import TemplateSpace, label_lookup

MNI_DIR = Path("derivatives") / "bids_mdd-synthetic"
MNI_NOTE = ("SYNTHETIC model inputs rendered directly in MNI space by bids_mdd-synth (no "
            "preprocessing was run); not real subjects")


@dataclass(frozen=True)
class MniSpace:
    """The 1 mm template with its GM and the atlas labels on the template grid."""

    t1w: np.ndarray
    gm: np.ndarray
    brain: np.ndarray
    labels: np.ndarray
    affine: np.ndarray
    tissue_means: np.ndarray


def prepare_mni_space(space: TemplateSpace) -> MniSpace:
    """``space`` must be prepared at the template's own resolution (no low-pass)."""
    atlas = nib.Nifti1Image(space.atlas_labels.astype(np.int32), space.atlas_affine)
    reference = nib.Nifti1Image(space.t1w, space.affine)
    labels = np.asarray(resample_to_img(atlas, reference, interpolation="nearest",
                                        force_resample=True, copy_header=True).dataobj)
    return MniSpace(t1w=space.t1w, gm=space.gm, brain=space.brain > 0.5,
                    labels=labels.astype(np.int32), affine=space.affine,
                    tissue_means=space.tissue_means)


def _to_grid(data: np.ndarray, affine: np.ndarray, grid) -> np.ndarray:
    image = resample_to_img(nib.Nifti1Image(data.astype(np.float32), affine), grid.image(),
                            interpolation="continuous", force_resample=True, copy_header=True)
    return np.nan_to_num(np.asarray(image.dataobj, dtype=np.float32))


def render_mni_inputs(mni: MniSpace, spec: CohortSpec, draw: SubjectDraw,
                      gm_scale: dict[int, float], offset_indices: list[int] = (),
                      ) -> dict[str, nib.Nifti1Image]:
    """The subject's smoothed modulated GM (1.5 mm grid) and, unless ``spec.mni_t1w`` is
    False, its normalised T1w (1 mm grid).

    A subject with a site gets what its scanner makes a segmentation see: GM times the site's
    ``gm_scale``, and times ``1 - offset`` in the atlas labels ``offset_indices``; ``spec`` is
    the acquisition's (``site_spec``), so the T1w's noise is the site's.
    """
    rng = np.random.default_rng([*draw.seed, 11])
    scale = gaussian_filter(label_lookup(mni.labels, gm_scale), 2.0)
    gm = mni.gm * np.clip(scale, 0.0, 1.0)
    lost = mni.gm - gm
    noise = gaussian_filter(rng.standard_normal(mni.gm.shape).astype(np.float32), 3.0)
    noise *= spec.mni_noise_sd / (noise.std() + 1e-12)
    seen = gm
    if draw.site is not None:
        offset = draw.site.offset * gaussian_filter(
            np.isin(mni.labels, offset_indices).astype(np.float32), 2.0)
        seen = gm * draw.site.gm_scale * (1.0 - offset)
    modulated = seen * np.exp(noise) * draw.head_scale**3  # modulation keeps native volume
    gm_img = CLASSIFIER_GRID.image(np.clip(_to_grid(modulated, mni.affine, CLASSIFIER_GRID),
                                           0, None))
    smoothed = smooth_img(gm_img, 8.0)
    images = {"gm": CLASSIFIER_GRID.image(np.asarray(smoothed.dataobj))}
    if not spec.mni_t1w:
        return images

    means = mni.tissue_means
    t1w = mni.t1w - lost * (means[1] - means[0])
    sd = spec.noise_fraction * means[2]
    t1w = np.sqrt((t1w + rng.normal(0, sd, t1w.shape)) ** 2 + rng.normal(0, sd, t1w.shape) ** 2)
    values = t1w[mni.brain]
    t1w = np.where(mni.brain, (t1w - values.mean()) / (values.std() + 1e-6), 0.0)
    images["t1w"] = DFRN_GRID.image(_to_grid(t1w, mni.affine, DFRN_GRID))
    return images


def write_mni_inputs(root: Path, draw: SubjectDraw, images: dict[str, nib.Nifti1Image]) -> None:
    """Write the images under ``root/derivatives/bids_mdd-synthetic`` with SYNTHETIC sidecars."""
    for key, spec in (("gm", GM_INPUT), ("t1w", T1W_INPUT)):
        if key not in images:
            continue
        path = derivative_path(root / MNI_DIR, subject=draw.label, **spec.entities)
        write_image(path, images[key], {"SyntheticData": True, "Description": MNI_NOTE})


def write_mni_qc(root: Path, draw: SubjectDraw, tiv_ml: float, gm_ml: float) -> None:
    """The subject's QC metrics as the participant level names them (TIV and GM volume from
    the generated native images), so that the group level finds its TIV covariate."""
    path = derivative_path(root / MNI_DIR, subject=draw.label, **OUTPUTS["qc"])
    write_json(path, {"tiv_ml": round(tiv_ml, 1), "gm_ml": round(gm_ml, 1),
                      "gm_fraction": round(gm_ml / tiv_ml, 4), "flags": [],
                      "SyntheticData": True, "Description": MNI_NOTE})
