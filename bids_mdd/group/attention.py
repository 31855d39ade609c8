"""Group attention maps: the mean of the participants' maps per target (paper B's factor
attention maps, o_k = (1/n) sum_i a_k,i), streamed one map at a time."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from nilearn.image import mean_img

from bids_mdd.errors import BidsMddError, ExitCode
from bids_mdd.spaces.grids import Grid


def mean_map(paths: Sequence[Path], grid: Grid) -> nib.Nifti1Image:
    """Voxelwise mean of ``paths`` (float32), which must all lie on ``grid``.

    The grid is checked from the headers first: nilearn's ``mean_img``, which computes the
    mean one image at a time, would otherwise resample maps from another grid silently.
    Raises BidsMddError (65) naming a map off the grid, (66) when ``paths`` is empty.
    """
    if not paths:
        raise BidsMddError("no attention maps to average", ExitCode.MISSING_INPUT)
    for path in paths:
        image = nib.load(str(path))
        if not grid.holds(image):
            raise BidsMddError(f"{path}: not on the {grid.describe()} of its file name "
                               f"(shape {image.shape[:3]}); rerun the participant level",
                               ExitCode.BAD_DATA)
    mean = mean_img([str(p) for p in paths], copy_header=False)
    return nib.Nifti1Image(np.asarray(mean.dataobj, dtype=np.float32), grid.affine)
