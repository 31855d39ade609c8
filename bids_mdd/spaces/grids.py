"""The two MNI-space model grids, built from affines (never from template files)."""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np

#: Largest difference (mm) between two affines of the same grid.
AFFINE_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Grid:
    """A voxel grid in MNI152NLin2009cAsym world space (RAS+ mm)."""

    shape: tuple[int, int, int]
    zoom: float
    origin: tuple[float, float, float]  # world coordinate of voxel (0, 0, 0)
    res: str  # the BIDS ``res-`` label of files on this grid

    @property
    def affine(self) -> np.ndarray:
        affine = np.diag([self.zoom, self.zoom, self.zoom, 1.0])
        affine[:3, 3] = self.origin
        return affine

    def image(self, data: np.ndarray | None = None, dtype: type = np.float32) -> nib.Nifti1Image:
        """A NIfTI image on this grid (zeros when ``data`` is None)."""
        array = np.zeros(self.shape, dtype) if data is None else np.asarray(data, dtype)
        if array.shape != self.shape:
            raise ValueError(f"data of shape {array.shape} is not on the {self.res} grid "
                             f"{self.shape}")
        image = nib.Nifti1Image(array, self.affine)
        image.set_qform(self.affine, code=4)  # 4: MNI152 space
        image.set_sform(self.affine, code=4)
        image.header.set_xyzt_units("mm")
        return image

    def holds(self, image: nib.Nifti1Image) -> bool:
        """Whether ``image`` lies on this grid: the same shape, and an affine equal to within
        :data:`AFFINE_TOLERANCE` (float32 headers round the origin by ~1e-5 mm)."""
        return (tuple(image.shape[:3]) == self.shape
                and np.allclose(image.affine, self.affine, atol=AFFINE_TOLERANCE))

    def describe(self) -> str:
        """``res-1p5 grid (121, 145, 121) at 1.5 mm``, for messages."""
        return f"res-{self.res} grid {self.shape} at {self.zoom:g} mm"


#: Paper A's classifier grid: SPM bounding box x -90..90, y -126..90, z -72..108 at 1.5 mm.
CLASSIFIER_GRID = Grid(shape=(121, 145, 121), zoom=1.5, origin=(-90.0, -126.0, -72.0), res="1p5")
#: Paper B's DFRN grid: FSL MNI152 bounding box x -90..91, y -126..91, z -72..109 at 1 mm.
DFRN_GRID = Grid(shape=(182, 218, 182), zoom=1.0, origin=(-90.0, -126.0, -72.0), res="1")
#: The model grids by their ``res-`` label.
GRIDS: dict[str, Grid] = {grid.res: grid for grid in (CLASSIFIER_GRID, DFRN_GRID)}
