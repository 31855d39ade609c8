"""The voxelwise group GLM: GM ~ intercept + MDD + covariates, streamed over subject chunks.

Per participant, the participant level writes a smoothed, Jacobian-modulated GM map on
:data:`~bids_mdd.spaces.grids.CLASSIFIER_GRID`. Here the maps are read one chunk of subjects at
a time and only X'Y (design columns x masked voxels) and the per-voxel sum of squares are kept
(float64), so memory is one chunk plus per-voxel accumulators, whatever the number of subjects.
The group level reads each map once: :func:`fit_glm` accumulates over :func:`search_region` and
keeps the voxels whose mean GM reaches the threshold (``min_mean``) at the end.
The MDD-vs-HC contrast gives a two-sided t-map; :func:`fdr_mask` applies Benjamini-Hochberg.
:func:`permutation_inference` (FWE via nilearn, TFCE or cluster mass) loads every subject.
"""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import nibabel as nib
import numpy as np
import pandas as pd
from nibabel.filebasedimages import ImageFileError
from scipy import stats

from bids_mdd.errors import BidsMddError, ExitCode
from bids_mdd.spaces.grids import CLASSIFIER_GRID, Grid

#: A voxel whose residual sum of squares is below this fraction of its (shifted) total sum of
#: squares is fitted exactly (constant, or an exact function of the design): t = 0, p = 1 there.
ZERO_VARIANCE_RTOL = 1e-10


@dataclass(frozen=True, eq=False)
class GlmResult:
    """One contrast of the voxelwise GLM; the vectors hold the ``mask`` voxels in C order.

    Attributes
    ----------
    t, p, effect : np.ndarray
        t statistic, two-sided p-value and contrast estimate c'beta per masked voxel.
    df : int
        Residual degrees of freedom, n - p.
    mask : np.ndarray
        Boolean 3D mask on the grid the vectors belong to.
    """

    t: np.ndarray
    p: np.ndarray
    effect: np.ndarray
    df: int
    mask: np.ndarray

    def to_grid(self, values: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """``values`` (one per masked voxel) back on the 3D grid, ``fill`` elsewhere."""
        return unmask(values, self.mask, fill)


def unmask(values: np.ndarray, mask: np.ndarray, fill: float = 0.0) -> np.ndarray:
    """A 3D float array of ``mask``'s shape with ``values`` in the mask (C order), ``fill`` out.

    Parameters
    ----------
    values : np.ndarray
        One value per True voxel of ``mask``, in C (row-major) order, as ``volume[mask]`` gives.
    mask : np.ndarray
        Boolean 3D mask.
    fill : float
        Value outside the mask.

    Returns
    -------
    np.ndarray
        Float64 array of ``mask.shape``.
    """
    values = np.asarray(values)
    if values.shape != (int(mask.sum()),):
        raise ValueError(f"{values.shape[0] if values.ndim else 'a scalar'} values for a mask "
                         f"of {int(mask.sum())} voxels")
    volume = np.full(mask.shape, fill, dtype=np.float64)
    volume[mask] = values
    return volume


def design_matrix(table: pd.DataFrame, group_column: str,
                  covariates: Sequence[str] = ()) -> tuple[np.ndarray, list[str]]:
    """The n x p design: intercept, the 0/1 MDD indicator, then the covariates.

    Numeric covariates are mean-centred; other covariates (strings, booleans, categoricals,
    e.g. sex "M"/"F") become 0/1 dummy columns named ``column[level]``, dropping the first
    level in sorted order (the reference).

    Parameters
    ----------
    table : pd.DataFrame
        One row per participant, in the order of the GM maps.
    group_column : str
        Column coded 1 = MDD, 0 = HC (the caller codes it).
    covariates : sequence of str
        Nuisance columns.

    Returns
    -------
    design : np.ndarray
        Float64 array of shape (n, p).
    names : list of str
        Column names: ``"intercept"``, ``group_column``, then the covariate columns.

    Raises
    ------
    BidsMddError
        ExitCode.BAD_DATA, naming the column, when a column is absent or has missing values,
        the group column is not 0/1, or the design is rank-deficient.
    """
    columns = [np.ones(len(table))]
    names = ["intercept", group_column]
    group = _column(table, group_column)
    if not group.isin([0, 1]).all():
        bad = sorted(set(group[~group.isin([0, 1])].astype(str)))[:3]
        raise BidsMddError(f"group column {group_column!r} must be coded 1 = MDD, 0 = HC; "
                           f"found {', '.join(bad)}", ExitCode.BAD_DATA)
    columns.append(group.to_numpy(dtype=np.float64))
    for name in covariates:
        values = _column(table, name)
        if is_numeric_covariate(values):
            numeric = values.to_numpy(dtype=np.float64)
            columns.append(numeric - numeric.mean())
            names.append(name)
            continue
        labels = values.astype(str)
        levels = sorted(labels.unique())
        if len(levels) < 2:
            raise BidsMddError(f"design matrix is rank-deficient: covariate {name!r} has the "
                               f"single level {levels[0]!r}; drop it", ExitCode.BAD_DATA)
        for level in levels[1:]:
            columns.append((labels == level).to_numpy(dtype=np.float64))
            names.append(f"{name}[{level}]")
    design = np.column_stack(columns)
    _check_full_rank(design, names)
    return design, names


def is_numeric_covariate(values: pd.Series) -> bool:
    """Whether a covariate enters as a number (else as dummy-coded levels; booleans too)."""
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


def _column(table: pd.DataFrame, name: str) -> pd.Series:
    """``table[name]``, or BidsMddError when absent or with missing values."""
    if name not in table.columns:
        raise BidsMddError(f"no column {name!r} in the participants table (columns: "
                           f"{', '.join(map(str, table.columns))})", ExitCode.BAD_DATA)
    values = table[name]
    missing = values.isna().to_numpy()
    if missing.any():
        rows = ", ".join(map(str, table.index[missing][:5]))
        raise BidsMddError(f"column {name!r} has {int(missing.sum())} missing value(s) (rows "
                           f"{rows}); fill them or drop those participants", ExitCode.BAD_DATA)
    return values


def _check_full_rank(design: np.ndarray, names: Sequence[str]) -> None:
    """BidsMddError naming the first column that is a linear combination of earlier ones."""
    if np.linalg.matrix_rank(design) == design.shape[1]:
        return
    for k in range(1, design.shape[1] + 1):
        if np.linalg.matrix_rank(design[:, :k]) < k:
            raise BidsMddError(f"design matrix is rank-deficient: column {names[k - 1]!r} is "
                               "constant or a linear combination of the columns before it "
                               f"({', '.join(names[:k - 1])})", ExitCode.BAD_DATA)


def contrast_vector(names: Sequence[str], column: str) -> np.ndarray:
    """The contrast selecting one design column (e.g. the MDD indicator: MDD minus HC)."""
    if column not in names:
        raise ValueError(f"no design column {column!r} (columns: {', '.join(names)})")
    contrast = np.zeros(len(names))
    contrast[list(names).index(column)] = 1.0
    return contrast


def read_map(path: Path, grid: Grid, flat_index: np.ndarray | None = None) -> np.ndarray:
    """One GM map as float32: the whole volume, or the voxels at ``flat_index`` (see
    :func:`fortran_index`).

    Raises
    ------
    BidsMddError
        Naming the file: ExitCode.MISSING_INPUT when absent; ExitCode.BAD_DATA when unreadable
        or when its shape or affine is not ``grid``'s.
    """
    try:
        image = nib.load(path)
        if not grid.holds(image):
            raise BidsMddError(f"{path}: shape {image.shape}, affine "
                               f"{np.round(image.affine[:3], 3).tolist()}: not on the "
                               f"{grid.describe()}; re-run the participant level",
                               ExitCode.BAD_DATA)
        data = np.asarray(image.dataobj, dtype=np.float32)
    except FileNotFoundError:
        raise BidsMddError(f"{path}: GM map not found", ExitCode.MISSING_INPUT) from None
    except (ImageFileError, OSError, EOFError, zlib.error, ValueError) as error:
        # not NIfTI, a bad or truncated gzip stream, a header nibabel rejects
        raise BidsMddError(f"{path}: cannot read as NIfTI ({error})", ExitCode.BAD_DATA) from None
    if flat_index is None:
        return data
    # F-order flat view of the (usually F-ordered) NIfTI array: no copy, and a 1-D take is
    # several times faster than boolean indexing of the 3D array.
    return data.reshape(-1, order="F")[flat_index]


class InMemoryMap(Protocol):
    """A GLM input held in memory rather than in a file (e.g. a ComBat-harmonised map)."""

    def values(self, flat_index: np.ndarray) -> np.ndarray: ...


def read_input(item: Path | str | InMemoryMap, grid: Grid, flat_index: np.ndarray,
               ) -> np.ndarray:
    """The voxels at ``flat_index`` of a GLM input: a map file (:func:`read_map`) or a map in
    memory."""
    if isinstance(item, (str, Path)):
        return read_map(Path(item), grid, flat_index)
    return item.values(flat_index)


def fortran_index(mask: np.ndarray) -> np.ndarray:
    """Indices into the F-order flattened volume of ``mask``'s voxels, listed in C order (so
    ``volume.reshape(-1, order="F")[index]`` equals ``volume[mask]``)."""
    return np.ravel_multi_index(np.nonzero(mask), mask.shape, order="F")


def _chunks(paths: Sequence[Path], chunk_size: int) -> Iterator[tuple[int, Sequence[Path]]]:
    """(first row, paths) of consecutive chunks of at most ``chunk_size`` paths."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, not {chunk_size}")
    for start in range(0, len(paths), chunk_size):
        yield start, paths[start:start + chunk_size]


def search_region(grid: Grid = CLASSIFIER_GRID, dilate_mm: float = 6.0) -> np.ndarray:
    """Where the group GM mask is looked for: the template's brain mask on ``grid``, dilated.

    MNI152NLin2009cAsym's brain mask (through templateflow; a clear error when it is not on
    disk) resampled to ``grid`` (nearest neighbour) and dilated by ``dilate_mm`` (3D
    ball), so that smoothed GM at the brain's edge stays in. :func:`fit_glm` reads only these
    voxels (about a third of the classifier grid), which is most of its speed.

    Returns
    -------
    np.ndarray
        Boolean array of ``grid.shape`` (a copy; the resampling is cached per grid).
    """
    return _search_region(grid, float(dilate_mm)).copy()


@lru_cache(maxsize=4)
def _search_region(grid: Grid, dilate_mm: float) -> np.ndarray:
    from nilearn.image import resample_to_img
    from scipy import ndimage

    from bids_mdd.spaces.templates import template_brain_mask

    resampled = resample_to_img(str(template_brain_mask(resolution=1)), grid.image(),
                                interpolation="nearest", force_resample=True, copy_header=True)
    brain = np.asarray(resampled.dataobj) > 0.5
    return ndimage.binary_dilation(brain, structure=ball(dilate_mm, grid.zoom))


def ball(radius_mm: float, zoom: float) -> np.ndarray:
    """A 3D boolean ball of ``radius_mm`` on isotropic voxels of ``zoom`` mm (a structuring
    element for ``scipy.ndimage.binary_dilation``; scipy's own are 6/18/26-neighbourhoods)."""
    radius = int(np.ceil(radius_mm / zoom))
    axes = np.ogrid[tuple(slice(-radius, radius + 1) for _ in range(3))]
    return sum((a * zoom) ** 2 for a in axes) <= radius_mm ** 2


def fit_glm(paths: Sequence[Path], design: np.ndarray, mask: np.ndarray | None,
            contrast: np.ndarray, chunk_size: int = 50, grid: Grid = CLASSIFIER_GRID,
            min_mean: float | None = None) -> GlmResult:
    """Ordinary least squares per masked voxel, accumulated over chunks of subjects.

    With ``min_mean``, ``mask`` (None: the whole grid) is a search region and the result's
    mask keeps the voxels whose mean over the maps is >= ``min_mean`` (the group GM mask):
    the mean is accumulated in the same pass, so each map is read (decompressed) once.

    For each chunk of ``chunk_size`` maps, the masked voxels are read into a reused float64
    buffer (chunk x voxels), shifted by a per-voxel reference (the first chunk's mean; only when
    the design holds a constant column, which keeps residuals unchanged and avoids cancellation
    in the sum of squares), and X'Y and the per-voxel sum of squares are accumulated. Then
    beta = (X'X)^-1 X'Y, RSS = y'y - beta'X'y, sigma^2 = RSS / (n - p),
    t = c'beta / sqrt(sigma^2 c'(X'X)^-1 c) and p = 2 sf(|t|) of Student's t with n - p df.
    Voxels fitted exactly (RSS below :data:`ZERO_VARIANCE_RTOL` of their total sum of squares,
    e.g. constant voxels) get t = 0, p = 1.

    Parameters
    ----------
    paths : sequence of Path or InMemoryMap
        GM maps on ``grid`` (files, or maps in memory such as ComBat-harmonised ones), one per
        design row, in the same order.
    design : np.ndarray
        (n, p) full-rank design, e.g. from :func:`design_matrix`.
    mask : np.ndarray or None
        Boolean 3D mask of ``grid.shape``; with ``min_mean``,
        the search region (None: every voxel of the grid).
    contrast : np.ndarray
        (p,) contrast vector c, e.g. from :func:`contrast_vector`.
    chunk_size : int
        Maps held in memory at once.
    grid : Grid
        The grid every map must be on.
    min_mean : float or None
        Keep only the voxels of ``mask`` whose mean map value is >= this (e.g. 0.2 for GM).

    Returns
    -------
    GlmResult
        t, p, effect (c'beta) per voxel of the result's mask, df and that mask.

    Raises
    ------
    BidsMddError
        ExitCode.BAD_DATA naming the file for a map off the grid or with non-finite values in
        the mask; for a rank-deficient design or one with no residual degrees of freedom.
    """
    design = np.asarray(design, dtype=np.float64)
    contrast = np.asarray(contrast, dtype=np.float64)
    mask = np.ones(grid.shape, bool) if mask is None else np.asarray(mask, dtype=bool)
    n, p = _check_inputs(paths, design, mask, contrast, grid)
    df = n - p
    flat_index = fortran_index(mask)
    n_voxels = flat_index.size

    has_constant = bool(np.any(np.all(design == design[0], axis=0) & (design[0] != 0)))
    reference = np.zeros(n_voxels)
    xty = np.zeros((p, n_voxels))
    sum_squares = np.zeros(n_voxels)
    total = np.zeros(n_voxels) if min_mean is not None else None
    buffer = np.empty((min(chunk_size, n), n_voxels))
    for start, chunk in _chunks(paths, chunk_size):
        rows = buffer[:len(chunk)]
        for i, path in enumerate(chunk):
            rows[i] = read_input(path, grid, flat_index)
            if not np.isfinite(rows[i]).all():
                raise BidsMddError(f"{path}: {int((~np.isfinite(rows[i])).sum())} non-finite "
                                   "values inside the group mask", ExitCode.BAD_DATA)
        if total is not None:
            total += rows.sum(axis=0)
        if start == 0 and has_constant:
            reference = rows.mean(axis=0)
        rows -= reference
        xty += design[start:start + len(chunk)].T @ rows
        sum_squares += np.einsum("ij,ij->j", rows, rows)
    del buffer
    if total is not None:
        keep = total / n >= min_mean
        if not keep.any():
            raise BidsMddError(f"no voxel has a mean map value >= {min_mean} (the group mask "
                               "is empty); are these GM maps?", ExitCode.BAD_DATA)
        reference, xty, sum_squares = reference[keep], xty[:, keep], sum_squares[keep]
        mask = unmask(keep.astype(float), mask) > 0

    xtx_inv = np.linalg.inv(design.T @ design)
    beta = xtx_inv @ xty  # coefficients of the shifted data
    rss = np.maximum(sum_squares - np.einsum("ij,ij->j", beta, xty), 0.0)
    # c'beta of the unshifted data: the shift y - r adds r (X'X)^-1 X'1 to beta
    effect = contrast @ beta + reference * (contrast @ xtx_inv @ design.sum(axis=0))
    variance_factor = float(contrast @ xtx_inv @ contrast)
    exact = rss <= ZERO_VARIANCE_RTOL * sum_squares
    stderr = np.sqrt(np.where(exact, 1.0, rss / df * variance_factor))
    t = np.where(exact, 0.0, effect / stderr)
    p_values = np.where(exact, 1.0, 2.0 * stats.t.sf(np.abs(t), df))
    return GlmResult(t=t, p=p_values, effect=effect, df=df, mask=mask)


def _check_inputs(paths: Sequence[Path], design: np.ndarray, mask: np.ndarray,
                  contrast: np.ndarray, grid: Grid) -> tuple[int, int]:
    """(n, p) after checking the shapes of the GLM inputs and the design's rank."""
    if design.ndim != 2 or not np.isfinite(design).all():
        raise BidsMddError("the design matrix must be a finite 2-D array", ExitCode.BAD_DATA)
    n, p = design.shape
    if len(paths) != n:
        raise BidsMddError(f"{len(paths)} GM maps for {n} design rows", ExitCode.BAD_DATA)
    if n <= p:
        raise BidsMddError(f"{n} participants for {p} design columns: no residual degrees of "
                           "freedom", ExitCode.BAD_DATA)
    if np.linalg.matrix_rank(design) < p:
        raise BidsMddError("design matrix is rank-deficient", ExitCode.BAD_DATA)
    if contrast.shape != (p,) or not np.any(contrast):
        raise ValueError(f"contrast of shape {contrast.shape} for {p} design columns (and not "
                         "all zero)")
    if mask.shape != grid.shape or not mask.any():
        raise ValueError(f"mask of shape {mask.shape} with {int(mask.sum())} voxels for the "
                         f"{grid.res} grid {grid.shape} (needs >= 1 voxel)")
    return n, p


def fdr_mask(p: np.ndarray, q: float = 0.05) -> np.ndarray:
    """Benjamini-Hochberg: True where the BH-adjusted p-value is <= ``q``.

    Parameters
    ----------
    p : np.ndarray
        p-values (any shape).
    q : float
        False discovery rate, in (0, 1].

    Returns
    -------
    np.ndarray
        Boolean array of ``p``'s shape.
    """
    p = np.asarray(p, dtype=np.float64)
    if not 0 < q <= 1:
        raise ValueError(f"q must be in (0, 1], not {q}")
    if p.size == 0:
        return np.zeros(p.shape, dtype=bool)
    # BH step-up via scipy's adjusted p-values (scipy.stats.false_discovery_control, method
    # "bh"): p_(k) is rejected iff min_{j >= k} m p_(j) / j <= q.
    adjusted = stats.false_discovery_control(p.ravel(), method="bh")
    return (adjusted <= q).reshape(p.shape)


def permutation_inference(paths: Sequence[Path], design: np.ndarray, mask: np.ndarray,
                          n_permutations: int = 5000, tfce: bool = True, seed: int = 0, *,
                          column: int = 1, cluster_threshold: float = 0.001,
                          grid: Grid = CLASSIFIER_GRID, n_jobs: int = 1) -> np.ndarray:
    """-log10 family-wise-error-corrected p-values of one design column, by permutation.

    A wrapper of :func:`nilearn.mass_univariate.permuted_ols` (Freedman-Lane-style: the tested
    column against the other columns as confounds; two-sided) with TFCE (``tfce=True``) or
    cluster-mass inference at the cluster-forming threshold ``cluster_threshold`` (an
    uncorrected p, as nilearn takes it). Unlike :func:`fit_glm`, this LOADS EVERY SUBJECT: an
    (n x masked voxels) float32 array (about 2.4 GB for 1000 subjects and 600 000 voxels), plus
    nilearn's working copies of it.

    Parameters
    ----------
    paths : sequence of Path or InMemoryMap
        GM maps on ``grid`` (files or maps in memory), one per design row.
    design : np.ndarray
        (n, p) design with an intercept column (nilearn then adds none).
    mask : np.ndarray
        Boolean 3D mask of ``grid.shape``.
    n_permutations : int
        Number of permutations.
    tfce : bool
        TFCE if True, else cluster mass.
    seed : int
        Random state of the permutations.
    column : int
        Index of the tested design column (1: the MDD indicator of :func:`design_matrix`).
    cluster_threshold : float
        Cluster-forming p (cluster mass only).
    grid : Grid
        The grid every map must be on.
    n_jobs : int
        nilearn's parallel workers.

    Returns
    -------
    np.ndarray
        3D float64 map of -log10 FWE p (0 outside the mask).
    """
    from nilearn.maskers import NiftiMasker
    from nilearn.mass_univariate import permuted_ols

    design = np.asarray(design, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    contrast = np.zeros(design.shape[1])
    contrast[column] = 1.0
    n, _ = _check_inputs(paths, design, mask, contrast, grid)
    flat_index = fortran_index(mask)
    data = np.empty((n, flat_index.size), dtype=np.float32)
    for i, path in enumerate(paths):
        data[i] = read_input(path, grid, flat_index)
    if not np.isfinite(data).all():
        raise BidsMddError("non-finite values inside the group mask", ExitCode.BAD_DATA)
    masker = NiftiMasker(mask_img=grid.image(mask, dtype=np.uint8)).fit()
    with warnings.catch_warnings():
        # nilearn's own int64 cluster-size image (cluster mass inference): harmless
        warnings.filterwarnings("ignore", message=".*contains 64-bit ints", category=UserWarning)
        outputs = permuted_ols(
            design[:, [column]], data,
            confounding_vars=np.delete(design, column, axis=1),
            model_intercept=True,  # the design's constant column is detected: none is added
            n_perm=n_permutations, two_sided_test=True, random_state=seed, n_jobs=n_jobs,
            masker=masker, tfce=tfce, threshold=None if tfce else cluster_threshold,
            output_type="dict")
    key = "logp_max_tfce" if tfce else "logp_max_mass"
    return unmask(np.ravel(outputs[key]), mask)
