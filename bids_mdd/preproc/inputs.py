"""Load and check one T1w: one clear reason (exit 65) for every kind of unusable image."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from bids_mdd.errors import BidsMddError, ExitCode

LOGGER = logging.getLogger(__name__)

#: Voxel edges (mm) bids_mdd accepts. Research T1w are 0.7-1.3 mm (the real scans in the tests:
#: 0.94-1.2 mm); below 0.3 mm ANTs' registration fails, above 4 mm (the synthetic test data's
#: resolution) a VBM map means little.
VOXEL_MM = (0.3, 4.0)
#: The smallest extent (mm) along any axis: a brain is ~140 mm wide; a slab is not a T1w.
MIN_EXTENT_MM = 80.0
#: Direction cosines further from orthonormal than this: ITK refuses the image.
MAX_SHEAR = 1e-3
#: Non-finite voxels enclosed by data (not a NaN background) beyond this share: corrupt.
MAX_ENCLOSED_NONFINITE = 0.001


def bad_input(path: str | Path, reason: str) -> BidsMddError:
    return BidsMddError(f"{path}: {reason}", ExitCode.BAD_DATA)


def load_t1w(path: str | Path, warn: bool = True) -> nib.Nifti1Image:
    """Read a T1w, squeeze a single-volume 4D image, reorient to RAS, return float32 with
    non-finite voxels set to 0 (a warning says how many, when ``warn``).

    Raises
    ------
    BidsMddError (exit 65)
        Unreadable or truncated file, 2D or multi-volume image, singular or sheared affine,
        voxels outside :data:`VOXEL_MM`, a field of view under :data:`MIN_EXTENT_MM`, no finite
        non-zero voxel, more than :data:`MAX_ENCLOSED_NONFINITE` of non-finite voxels inside
        the data.
    """
    _check_readable(path)
    try:
        image = nib.load(str(path))
        data = np.asarray(image.dataobj, dtype=np.float32)
    except Exception as exc:  # nibabel raises many types for broken files
        why = str(exc).splitlines()[0] if str(exc) else "truncated?"
        why = re.sub(r"\s+from\s*$", "", why)  # nibabel names an empty file object last
        raise bad_input(path, f"cannot be read as NIfTI ({type(exc).__name__}: {why}); "
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
    _check_geometry(path, affine, data.shape)
    finite = np.isfinite(data)
    if not finite.any() or not np.any(data[finite] != 0):
        raise bad_input(path, "has no finite non-zero voxel (all zero or NaN)")
    if not finite.all():
        _check_nonfinite(path, finite, warn)
    data = np.where(finite, data, 0.0).astype(np.float32)
    image = nib.Nifti1Image(data, affine)
    return nib.as_closest_canonical(image)


def _check_readable(path: str | Path) -> None:
    """A dangling symlink and an unreadable file are not broken images: say what to fix."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise BidsMddError(f"{path}: a symlink to {os.readlink(path)}, which does not exist; "
                           "fetch the file (datalad get / git annex get) or fix the link",
                           ExitCode.MISSING_INPUT)
    try:
        with open(path, "rb"):
            pass
    except PermissionError as exc:
        raise BidsMddError(f"{path}: cannot be read by uid {os.getuid()} (permission denied); "
                           "give it read access (chmod a+r) or run as its owner",
                           ExitCode.MISSING_INPUT) from exc
    except FileNotFoundError as exc:
        raise BidsMddError(f"{path}: does not exist (moved while bids_mdd ran?); check the "
                           "dataset", ExitCode.MISSING_INPUT) from exc


def _check_geometry(path: str | Path, affine: np.ndarray, shape: tuple[int, ...]) -> None:
    """Voxel size, field of view and orthonormal axes, each with its fix."""
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    cosines = affine[:3, :3] / zooms
    shear = float(np.abs(cosines.T @ cosines - np.eye(3)).max())
    if shear > MAX_SHEAR:
        raise bad_input(path, f"has a sheared affine (axes {shear:.3f} from orthogonal); ANTs "
                              "needs orthonormal direction cosines: reslice the image to a "
                              "non-sheared grid or fix the header's sform/qform")
    low, high = VOXEL_MM
    if zooms.min() < low or zooms.max() > high:
        size = " x ".join(f"{z:.3g}" for z in zooms)
        raise bad_input(path, f"has {size} mm voxels, outside {low}-{high} mm; check the "
                              "header's voxel size (pixdim) or resample the image")
    extent = zooms * np.asarray(shape[:3])
    if extent.min() < MIN_EXTENT_MM:
        size = " x ".join(f"{e:.0f}" for e in extent)
        raise bad_input(path, f"covers only {size} mm; a T1w must cover the whole brain "
                              f"(at least {MIN_EXTENT_MM:.0f} mm along every axis)")


def _check_nonfinite(path: str | Path, finite: np.ndarray, warn: bool) -> None:
    """NaN/Inf enclosed by data is corruption (refused above a share); a NaN background,
    connected to the image's edge, is only counted."""
    enclosed = ndimage.binary_fill_holes(finite) & ~finite
    share = float(enclosed.sum() / max(int(finite.sum() + enclosed.sum()), 1))
    if share > MAX_ENCLOSED_NONFINITE:
        raise bad_input(path, f"{100 * share:.1f} % of the voxels inside the image's data are "
                              "NaN or Inf; re-export the image from the scanner data")
    if warn:
        LOGGER.warning("%s: %d NaN/Inf voxel(s) (%d inside the data) set to 0", path,
                       int((~finite).sum()), int(enclosed.sum()))
