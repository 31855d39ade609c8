"""Tissue prior probability maps in template space, for prior-based tissue segmentation.

Source: the ICBM 2009a nonlinear symmetric GM and WM probability maps that nilearn ships in its
package data (``load_mni152_gm_template``/``load_mni152_wm_template``; nilearn is BSD-3, the
maps carry the MNI/ICBM permissive copyright notice, as the MNI152NLin2009cAsym template does).
They are used as if on MNI152NLin2009cAsym: an affine between the two templates' T1w images is
within 0.1 mm and 1 % of identity (measured); templateflow ships no tissue maps of 2009cAsym.
CSF is 1 - GM - WM.

The GM prior is split into three GM classes by region, each then getting its own intensity model
in Atropos: cortical GM, deep GM (AAL2 thalamus, caudate, putamen, pallidum: their T1w intensity
lies between cortex and WM, and the template gives them GM 0.3-0.7) and cerebellar GM (AAL2
cerebellum and vermis: at 2 mm its folia blur into a brighter grey than the cortex). Region
masks are smoothed (sigma 2 mm) so that registration error blurs the split, not the tissue.
"""

from __future__ import annotations

from functools import lru_cache

import nibabel as nib
import numpy as np
from scipy import ndimage

from bids_mdd.atlas import atlas_labels_on_grid, load_aal2

#: Atropos classes, in the order of the prior images; the three GM classes are summed afterwards.
TISSUE_CLASSES = ("CSF", "GM_cortical", "GM_deep", "GM_cerebellar", "WM")
DEEP_GM = r"^(Thal|Caudate|Putamen|Pallidum)"
CEREBELLUM = r"^(Cerebel|Vermis)"
REGION_SIGMA_MM = 2.0


def _region(labels: np.ndarray, pattern: str) -> np.ndarray:
    atlas = load_aal2()
    names = atlas.labels["name"].astype(str)
    indices = atlas.labels.loc[names.str.match(pattern), "index"].to_numpy()
    return ndimage.gaussian_filter(np.isin(labels, indices).astype(np.float32), REGION_SIGMA_MM)


@lru_cache(maxsize=1)
def template_priors() -> tuple[nib.Nifti1Image, ...]:
    """The five class priors (``TISSUE_CLASSES`` order) on nilearn's 1 mm template grid.

    Each voxel's priors sum to 1; the deep-GM class takes GM and WM prior inside the deep
    nuclei (DLMUSE, like most atlases, counts the whole thalamus as GM).
    """
    from nilearn.datasets import load_mni152_gm_template, load_mni152_wm_template

    gm_image = load_mni152_gm_template(resolution=1)
    gm = np.clip(gm_image.get_fdata(dtype=np.float32), 0.0, 1.0)
    wm = np.clip(load_mni152_wm_template(resolution=1).get_fdata(dtype=np.float32), 0.0, 1.0)
    labels = atlas_labels_on_grid(gm_image.affine, gm_image.shape)
    deep = np.clip(_region(labels, DEEP_GM), 0.0, 1.0)
    cerebellum = np.clip(_region(labels, CEREBELLUM), 0.0, 1.0) * (1.0 - deep)
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0)
    classes = [csf, gm * (1.0 - deep - cerebellum), (gm + wm) * deep, gm * cerebellum,
               wm * (1.0 - deep)]
    total = np.maximum(sum(classes), 1e-6)
    return tuple(nib.Nifti1Image((c / total).astype(np.float32), gm_image.affine)
                 for c in classes)

