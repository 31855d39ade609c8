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
#: Voxel magnitudes beyond this are corrupt data or a wrong scl_slope: above any integer type a
#: scanner writes (uint32 tops at 4.3e9), and far enough below float32's 3.4e38 that ANTs' sums
#: of squares (N voxels x value^2) stay finite; near 3e38 its registration fails.
MAX_ABS_INTENSITY = 1e10
#: qform and sform placing some voxel of the image further apart than this (mm) disagree: a
#: tenth of a typical voxel; the float32 storage of matching ones differs by under 0.001 mm.
QFORM_SFORM_TOLERANCE_MM = 0.1
#: Largest/smallest voxel edge above which a warning is given. Research 3D T1w are isotropic
#: or nearly (1 x 1 x 1.2 mm, ADNI's 1.25 x 1.25 x 1.2; at most 2:1); clinical 2D T1w with
#: thick slices (0.5 x 0.5 x 3.5 mm: 7:1) blur tissue boundaries along the slices, which
#: biases the tissue volumes (TIV, CSF) and the VBM maps.
MAX_ANISOTROPY = 3.0
#: A constant value below zero on at least this share of the image's faces is a background
#: fill (a masking tool's -1000), not signal.
FILL_BORDER_SHARE = 0.5
#: Voxels inside the data (over 3 voxels from the fill, past the edge that interpolation
#: blurs into it) allowed below zero for the fill to be read as a fill: ringing leaves a few;
#: more means intensities that are themselves shifted.
MAX_NEGATIVE_TISSUE = 0.01


def bad_input(path: str | Path, reason: str) -> BidsMddError:
    return BidsMddError(f"{path}: {reason}", ExitCode.BAD_DATA)


def load_t1w(path: str | Path, warn: bool = True) -> nib.Nifti1Image:
    """Read a T1w, squeeze a single-volume 4D image, reorient to RAS, return float32 with
    non-finite voxels set to 0 (a warning says how many, when ``warn``).

    Raises
    ------
    BidsMddError (exit 65)
        Unreadable or truncated file, RGB or complex voxels, 2D or multi-volume image, no
        orientation (qform and sform codes 0), singular or sheared affine, voxels outside
        :data:`VOXEL_MM`, a field of view under :data:`MIN_EXTENT_MM`, no finite non-zero
        voxel, voxels beyond :data:`MAX_ABS_INTENSITY`, more than
        :data:`MAX_ENCLOSED_NONFINITE` of non-finite voxels inside the data, a negative fill
        background around negative intensities.

    Warns (when ``warn``) about a qform that disagrees with the sform, voxels more anisotropic
    than :data:`MAX_ANISOTROPY`, and a negative background fill it sets to 0.
    """
    _check_readable(path)
    try:
        image = nib.load(str(path))
        _check_voxel_type(path, image)
        data = np.asarray(image.dataobj, dtype=np.float32)
    except BidsMddError:
        raise
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
    _check_orientation(path, image, data.shape, warn)
    affine = image.affine
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-8:
        raise bad_input(path, "has a singular or non-finite affine (check the qform/sform of the "
                              "header)")
    _check_geometry(path, affine, data.shape, warn)
    finite = np.isfinite(data)
    if not finite.any() or not np.any(data[finite] != 0):
        raise bad_input(path, "has no finite non-zero voxel (all zero or NaN)")
    _check_magnitude(path, data, finite)
    if not finite.all():
        _check_nonfinite(path, finite, warn)
    data = np.where(finite, data, 0.0).astype(np.float32)
    data = _zero_negative_fill(path, data, warn)
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


def _check_voxel_type(path: str | Path, image: nib.spatialimages.SpatialImage) -> None:
    """RGB (structured) and complex voxels have no single intensity: casting them to float
    fails with numpy's words, or silently drops the imaginary part."""
    dtype = image.get_data_dtype()
    label = (image.header.get_value_label("datatype")
             if isinstance(image.header, nib.Nifti1Header) else str(dtype))
    if dtype.fields:
        raise bad_input(path, f"RGB/structured voxel type ({label}: fields "
                              f"{', '.join(dtype.fields)}) is not a T1w intensity image; export "
                              "a single-channel (grayscale) T1w")
    if dtype.kind == "c":
        raise bad_input(path, f"complex voxel type ({label}) is not a T1w intensity image; "
                              "export the magnitude image")


def _check_orientation(path: str | Path, image: nib.spatialimages.SpatialImage,
                       shape: tuple[int, ...], warn: bool) -> None:
    """Without qform and sform nibabel falls back to an affine that guesses the storage order
    (the brain may come out left-right mirrored with no error): refused. A qform that
    disagrees with the sform is only named: the sform is used, as nibabel does."""
    header = image.header
    if not isinstance(header, nib.Nifti1Header):  # Nifti2Header is one too
        return
    qform_code, sform_code = int(header["qform_code"]), int(header["sform_code"])
    if qform_code == 0 and sform_code == 0:
        raise bad_input(path, "the orientation is unknown (qform_code and sform_code are 0); set "
                              "the qform/sform (e.g. from the scanner's DICOM with dcm2niix) "
                              "before running bids_mdd")
    if qform_code == 0 or sform_code == 0 or not warn:
        return
    corners = np.array([[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1)
                        for k in (0, shape[2] - 1)]).T
    apart = np.linalg.norm((header.get_qform() - header.get_sform()) @ corners, axis=0).max()
    if apart > QFORM_SFORM_TOLERANCE_MM:
        LOGGER.warning("%s: the qform and the sform disagree (they place voxels up to %.1f mm "
                       "apart); bids_mdd uses the sform (sform_code %d): fix the header if the "
                       "qform is the right one", path, apart, sform_code)


def _check_magnitude(path: str | Path, data: np.ndarray, finite: np.ndarray) -> None:
    """Finite voxels no T1w holds (corrupt data, a wrong scl_slope): ANTs would overflow."""
    with np.errstate(invalid="ignore"):
        extreme = finite & (np.abs(data) > MAX_ABS_INTENSITY)
    if extreme.any():
        peak = float(np.abs(data[extreme]).max())
        raise bad_input(path, f"{int(extreme.sum())} voxel(s) beyond +-{MAX_ABS_INTENSITY:.0e} "
                              f"(up to {peak:.3g}), far beyond any T1w intensity (corrupt data or "
                              "a wrong scl_slope); re-export the image")


def _zero_negative_fill(path: str | Path, data: np.ndarray, warn: bool) -> np.ndarray:
    """A constant negative background (a fill value, e.g. -1000) set to 0.

    Left as it is, the fill reads as signal everywhere: the skull-strip detection sees no
    background, N4 and the segmentation fit it as tissue, and the participant fails the QC gate
    with nothing pointing at the cause. When the data inside the fill is non-negative (up to
    :data:`MAX_NEGATIVE_TISSUE`; the edge blurred into the fill is not counted) the fill is
    unambiguous and zeroing it changes no tissue voxel: what a demanding user expects is the
    image processed, with a warning, not a valid scan refused for its fill. When the data is
    itself largely negative, the intensities are shifted and where tissue ends and background
    begins is a guess: refused, with the reason.
    """
    low = float(data.min())
    if low >= 0:
        return data
    faces = np.concatenate([data[index].ravel() for axis in range(3)
                            for index in _faces(axis)])
    fill = data == low
    if np.mean(faces == low) < FILL_BORDER_SHARE or fill.all():
        return data
    inside = ~ndimage.binary_dilation(fill, iterations=3)  # not the edge blurred into the fill
    negative = float(np.mean(data[inside] < 0)) if inside.any() else 0.0
    share = 100 * float(fill.mean())
    if negative > MAX_NEGATIVE_TISSUE:
        raise bad_input(path, f"has a constant background of {low:g} ({share:.0f} % of the "
                              f"voxels) and {100 * negative:.0f} % of the voxels inside the data "
                              "below 0: "
                              "the intensities are shifted, so background and tissue cannot be "
                              "told apart; rescale the image to non-negative intensities with a "
                              "0 background")
    if warn:
        LOGGER.warning("%s: the background (%.0f %% of the voxels) holds the constant %g, below "
                       "every tissue intensity; set to 0 (write a 0 background to silence this)",
                       path, share, low)
    return np.where(fill, np.float32(0), data)


def _faces(axis: int) -> tuple[tuple, tuple]:
    first, last = [slice(None)] * 3, [slice(None)] * 3
    first[axis], last[axis] = 0, -1
    return tuple(first), tuple(last)


def _check_geometry(path: str | Path, affine: np.ndarray, shape: tuple[int, ...],
                    warn: bool = True) -> None:
    """Voxel size, field of view and orthonormal axes, each with its fix; strongly
    anisotropic voxels are warned about (see :data:`MAX_ANISOTROPY`)."""
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
    if warn and zooms.max() / zooms.min() > MAX_ANISOTROPY:
        size = " x ".join(f"{z:.3g}" for z in zooms)
        LOGGER.warning("%s: anisotropic %s mm voxels (largest/smallest %.1f, above %g): thick "
                       "slices blur tissue boundaries, which biases the tissue volumes (TIV, "
                       "CSF) and the GM maps; use a 3D (near-isotropic) T1w if there is one",
                       path, size, zooms.max() / zooms.min(), MAX_ANISOTROPY)


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
