"""Load and check one T1w: one clear reason (exit 65) for every kind of unusable image."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from bids_mdd.errors import BidsMddError, ExitCode


def bad_input(path: str | Path, reason: str) -> BidsMddError:
    return BidsMddError(f"{path}: {reason}", ExitCode.BAD_DATA)


def load_t1w(path: str | Path) -> nib.Nifti1Image:
    """Read a T1w, squeeze a single-volume 4D image, reorient to RAS, return float32.

    Raises
    ------
    BidsMddError (exit 65)
        Unreadable or truncated file, 2D or multi-volume image, singular affine, no finite
        non-zero voxel.
    """
    try:
        image = nib.load(str(path))
        data = np.asarray(image.dataobj, dtype=np.float32)
    except Exception as exc:  # nibabel raises many types for broken files
        raise bad_input(path, f"cannot be read as NIfTI ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else 'truncated?'}); "
                              "re-export the image") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim == 4:
        raise bad_input(path, f"is 4D with {data.shape[3]} volumes; a T1w must be one volume "
                              "(average the volumes or keep one)")
    if data.ndim != 3 or min(data.shape) < 2:
        raise bad_input(path, f"has shape {data.shape}: a T1w must be a 3D volume")
    affine = image.affine
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-8:
        raise bad_input(path, "has a singular or non-finite affine (check the qform/sform of the "
                              "header)")
    finite = np.isfinite(data)
    if not finite.any() or not np.any(data[finite] != 0):
        raise bad_input(path, "has no finite non-zero voxel (all zero or NaN)")
    data = np.where(finite, data, 0.0).astype(np.float32)
    image = nib.Nifti1Image(data, affine)
    return nib.as_closest_canonical(image)
