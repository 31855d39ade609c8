"""Group attention maps: the mean of the participants' maps per target (paper B's factor
attention maps, o_k = (1/n) sum_i a_k,i), streamed one map at a time."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_mdd.errors import BidsMddError, ExitCode


def mean_map(paths: Sequence[Path]) -> nib.Nifti1Image:
    """Voxelwise mean of ``paths`` (all on one grid), holding one map and a float64 sum.

    Raises BidsMddError (65) naming a map whose grid differs from the first one's, and (66)
    when ``paths`` is empty.
    """
    if not paths:
        raise BidsMddError("no attention maps to average", ExitCode.MISSING_INPUT)
    first = nib.load(str(paths[0]))
    total = np.zeros(first.shape[:3], np.float64)
    for path in paths:
        image = first if path == paths[0] else nib.load(str(path))
        if image.shape[:3] != first.shape[:3] or not np.allclose(image.affine, first.affine,
                                                                 atol=1e-3):
            raise BidsMddError(f"{path}: not on the grid of {paths[0]} "
                               f"({image.shape[:3]} vs {first.shape[:3]}); rerun the "
                               "participant level with the same models", ExitCode.BAD_DATA)
        total += np.asarray(image.dataobj, dtype=np.float64)
    return nib.Nifti1Image((total / len(paths)).astype(np.float32), first.affine)
