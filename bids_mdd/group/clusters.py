"""The group level's cluster table and AAL2 region summaries of voxelwise maps.

:func:`cluster_table` turns a significance mask (e.g. :func:`~bids_mdd.group.glm.fdr_mask` of
the GLM's p-values, put back on the grid) into one row per connected cluster, positive (MDD > HC)
and negative (MDD < HC) clusters apart, with the peak's MNI coordinates and AAL2 label, the
cluster's size, mean effect and its overlap with every AAL2 region. :func:`region_summary`
ranks the AAL2 regions of any 3D map (e.g. an averaged attention map) by their mean value.

Clusters are found with :func:`scipy.ndimage.label`, not with
:func:`nilearn.reporting.get_clusters_table`: nilearn thresholds a statistic image at one value
(our mask is arbitrary, e.g. Benjamini-Hochberg's), always uses face (6-)connectivity, reports
peaks and sub-peaks rather than one row per cluster, and names no atlas region; we need
sign-split components of a given mask at a chosen connectivity, the mean effect over each and
its overlap with every AAL2 region, all of which take the component label image itself.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd
from scipy import ndimage

from bids_mdd.spaces.grids import CLASSIFIER_GRID, Grid

#: Columns of :func:`cluster_table`, in order.
CLUSTER_COLUMNS: tuple[str, ...] = (
    "cluster_id", "sign", "peak_x", "peak_y", "peak_z", "size_voxels", "size_mm3", "peak_t",
    "mean_effect", "peak_label", "regions")
#: Columns of :func:`region_summary`, in order.
REGION_COLUMNS: tuple[str, ...] = ("region", "mean", "share_of_total", "voxels")
#: Name of the voxels whose AAL2 label is 0.
OUTSIDE_ATLAS = "outside atlas"
#: Regions holding less than this percentage of a cluster are left out of its ``regions`` text.
MIN_REGION_PERCENT = 1.0
#: scipy's connectivity rank for each neighbourhood size of a 3D voxel.
_CONNECTIVITY_RANK = {6: 1, 18: 2, 26: 3}


def atlas_labels(grid: Grid = CLASSIFIER_GRID) -> np.ndarray:
    """AAL2 label indices on ``grid`` (nearest neighbour; 0 = outside the atlas), cached.

    The resampling is computed once per grid (shape and affine); the returned array is shared
    between calls and read-only.

    Parameters
    ----------
    grid : Grid
        The target grid.

    Returns
    -------
    np.ndarray
        Read-only int32 array of ``grid.shape``.
    """
    affine = tuple(float(v) for v in np.asarray(grid.affine, dtype=np.float64).ravel())
    return _atlas_labels(tuple(int(n) for n in grid.shape), affine)


@lru_cache(maxsize=4)
def _atlas_labels(shape: tuple[int, ...], affine: tuple[float, ...]) -> np.ndarray:
    """:func:`atlas_labels` keyed on hashables (the shape and the flattened 4 x 4 affine)."""
    from bids_mdd.atlas import atlas_labels_on_grid

    labels = atlas_labels_on_grid(np.reshape(affine, (4, 4)), shape)
    labels.setflags(write=False)
    return labels


@lru_cache(maxsize=1)
def _label_names() -> dict[int, str]:
    """AAL2 label index -> region name."""
    from bids_mdd.atlas import load_aal2

    table = load_aal2().labels
    return {int(i): str(name) for i, name in zip(table["index"], table["name"])}


def _name(index: int) -> str:
    """The AAL2 name of a label index, :data:`OUTSIDE_ATLAS` for 0."""
    if index == 0:
        return OUTSIDE_ATLAS
    return _label_names().get(int(index), f"AAL2 label {int(index)}")


def _structure(connectivity: int) -> np.ndarray:
    """scipy's 3D structuring element for 6-, 18- or 26-connectivity."""
    if connectivity not in _CONNECTIVITY_RANK:
        raise ValueError(f"connectivity must be 6, 18 or 26, not {connectivity}")
    return ndimage.generate_binary_structure(3, _CONNECTIVITY_RANK[connectivity])


def _check_shape(name: str, array: np.ndarray, grid: Grid) -> None:
    """ValueError when ``array`` is not of ``grid.shape``."""
    if array.shape != tuple(grid.shape):
        raise ValueError(f"{name} of shape {array.shape} is not on the {grid.res} grid "
                         f"{tuple(grid.shape)}")


def _empty(columns: tuple[str, ...], dtypes: dict[str, str]) -> pd.DataFrame:
    """A zero-row DataFrame with ``columns`` of the given dtypes."""
    return pd.DataFrame({c: pd.Series(dtype=dtypes[c]) for c in columns})


_CLUSTER_DTYPES = {"cluster_id": "int64", "sign": "object", "peak_x": "float64",
                   "peak_y": "float64", "peak_z": "float64", "size_voxels": "int64",
                   "size_mm3": "float64", "peak_t": "float64", "mean_effect": "float64",
                   "peak_label": "object", "regions": "object"}
_REGION_DTYPES = {"region": "object", "mean": "float64", "share_of_total": "float64",
                  "voxels": "int64"}


def regions_text(labels: np.ndarray, min_percent: float = MIN_REGION_PERCENT) -> str:
    """The share of voxels in each label as ``"Name (xx.x %); Name2 (yy.y %)"``.

    Shares are in descending order (ties by name); labels under ``min_percent`` are left out.
    Label 0 appears as :data:`OUTSIDE_ATLAS` when its share reaches ``min_percent``.

    Parameters
    ----------
    labels : np.ndarray
        AAL2 label index of each voxel of one cluster (any shape, at least one voxel).
    min_percent : float
        Smallest share listed, in percent.

    Returns
    -------
    str
        The text ("" when no label reaches ``min_percent``).
    """
    indices, counts = np.unique(np.asarray(labels).ravel(), return_counts=True)
    percent = 100.0 * counts / counts.sum()
    shares = sorted(((float(p), _name(int(i))) for i, p in zip(indices, percent)
                     if p >= min_percent), key=lambda item: (-item[0], item[1]))
    return "; ".join(f"{name} ({p:.1f} %)" for p, name in shares)


def _components(significant: np.ndarray, t_map: np.ndarray,
                structure: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(sign, voxel indices as a (3, n) array) of every sign-split connected component."""
    out = []
    for sign, voxels in (("MDD>HC", significant & (t_map > 0)),
                         ("MDD<HC", significant & (t_map < 0))):
        labeled, n = ndimage.label(voxels, structure=structure)
        if n == 0:
            continue
        ijk = np.array(np.nonzero(labeled))
        component = labeled[tuple(ijk)]
        order = np.argsort(component, kind="stable")
        bounds = np.searchsorted(component[order], np.arange(1, n + 2))
        out.extend((sign, ijk[:, order[bounds[k]:bounds[k + 1]]]) for k in range(n))
    return out


def _cluster_row(sign: str, ijk: np.ndarray, t_map: np.ndarray, effect_map: np.ndarray,
                 labels: np.ndarray, grid: Grid) -> dict[str, object]:
    """One :func:`cluster_table` row (without ``cluster_id``) for the voxels ``ijk``."""
    index = tuple(ijk)
    t_values = t_map[index]
    peak = ijk[:, int(np.argmax(np.abs(t_values)))]
    x, y, z = (np.asarray(grid.affine) @ np.append(peak, 1.0))[:3]
    size = ijk.shape[1]
    return {"sign": sign, "peak_x": float(x), "peak_y": float(y), "peak_z": float(z),
            "size_voxels": int(size), "size_mm3": float(size * abs(np.linalg.det(
                np.asarray(grid.affine)[:3, :3]))),
            "peak_t": float(t_map[tuple(peak)]),
            "mean_effect": float(np.mean(effect_map[index], dtype=np.float64)),
            "peak_label": _name(int(labels[tuple(peak)])),
            "regions": regions_text(labels[index])}


def cluster_table(t_map: np.ndarray, effect_map: np.ndarray, significant: np.ndarray,
                  grid: Grid = CLASSIFIER_GRID, min_voxels: int = 1,
                  connectivity: int = 26) -> pd.DataFrame:
    """One row per connected cluster of significant voxels, positive and negative apart.

    Components of ``significant & (t > 0)`` (MDD > HC) and of ``significant & (t < 0)``
    (MDD < HC) are labelled separately, so clusters of opposite sign never merge. The peak is
    the voxel of largest |t| (the first in C order on ties).

    Parameters
    ----------
    t_map : np.ndarray
        3D t statistic of the MDD-vs-HC contrast on ``grid`` (e.g. ``GlmResult.to_grid(t)``).
    effect_map : np.ndarray
        3D contrast estimate c'beta on ``grid``.
    significant : np.ndarray
        3D boolean mask of significant voxels (e.g. the FDR mask on the grid); voxels where t is
        0 or not finite are ignored.
    grid : Grid
        The grid of the maps: its affine gives the MNI coordinates and voxel volume, and AAL2 is
        resampled onto it (cached).
    min_voxels : int
        Clusters with fewer voxels are dropped.
    connectivity : int
        Neighbourhood of a voxel: 6 (faces), 18 (faces and edges) or 26 (and corners).

    Returns
    -------
    pd.DataFrame
        Columns :data:`CLUSTER_COLUMNS`: ``cluster_id`` (1.. in the table's order), ``sign``
        ("MDD>HC" or "MDD<HC"), ``peak_x``, ``peak_y``, ``peak_z`` (MNI mm), ``size_voxels``,
        ``size_mm3``, ``peak_t``, ``mean_effect`` (mean c'beta over the cluster),
        ``peak_label`` (AAL2 name at the peak, "outside atlas" for none) and ``regions`` (see
        :func:`regions_text`); sorted by |peak_t| descending. No rows when nothing is
        significant.
    """
    t_map = np.asarray(t_map, dtype=np.float64)
    effect_map = np.asarray(effect_map, dtype=np.float64)
    significant = np.asarray(significant, dtype=bool)
    for name, array in (("t_map", t_map), ("effect_map", effect_map),
                        ("significant", significant)):
        _check_shape(name, array, grid)
    significant = significant & np.isfinite(t_map)
    structure = _structure(connectivity)
    components = [(sign, ijk) for sign, ijk in _components(significant, t_map, structure)
                  if ijk.shape[1] >= min_voxels]
    if not components:
        return _empty(CLUSTER_COLUMNS, _CLUSTER_DTYPES)
    labels = atlas_labels(grid)
    rows = [_cluster_row(sign, ijk, t_map, effect_map, labels, grid)
            for sign, ijk in components]
    rows.sort(key=lambda row: -abs(row["peak_t"]))
    table = pd.DataFrame(rows)
    table.insert(0, "cluster_id", np.arange(1, len(table) + 1, dtype=np.int64))
    return table.loc[:, list(CLUSTER_COLUMNS)].astype(_CLUSTER_DTYPES)


def region_summary(values: np.ndarray, mask: np.ndarray | None = None,
                   grid: Grid = CLASSIFIER_GRID, top: int = 10) -> pd.DataFrame:
    """The AAL2 regions ranked by the mean of a 3D map over their voxels.

    Only atlas voxels (label != 0) inside ``mask`` (all voxels when None) with a finite value
    count. ``share_of_total`` is the region's sum over the sum over all those voxels, so for a
    non-negative map (e.g. attention) the shares of all regions add up to 1.

    Parameters
    ----------
    values : np.ndarray
        3D map on ``grid`` (e.g. a mean attention map, possibly on
        :data:`~bids_mdd.spaces.grids.DFRN_GRID`).
    mask : np.ndarray or None
        3D boolean mask of the voxels to use, or None for all.
    grid : Grid
        The grid of ``values``; AAL2 is resampled onto it (cached).
    top : int
        Number of regions returned (the highest means).

    Returns
    -------
    pd.DataFrame
        Columns :data:`REGION_COLUMNS`: ``region`` (AAL2 name), ``mean``, ``share_of_total``
        (NaN when the total is 0) and ``voxels``; at most ``top`` rows, by ``mean`` descending
        (ties by name).
    """
    values = np.asarray(values, dtype=np.float64)
    _check_shape("values", values, grid)
    labels = atlas_labels(grid)
    use = (labels != 0) & np.isfinite(values)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        _check_shape("mask", mask, grid)
        use &= mask
    if top < 1 or not use.any():
        return _empty(REGION_COLUMNS, _REGION_DTYPES)
    region_labels, inverse = np.unique(labels[use], return_inverse=True)
    sums = np.bincount(inverse, weights=values[use])
    counts = np.bincount(inverse)
    total = float(sums.sum())
    table = pd.DataFrame({
        "region": [_name(int(i)) for i in region_labels],
        "mean": sums / counts,
        "share_of_total": sums / total if total != 0 else np.full(sums.shape, np.nan),
        "voxels": counts.astype(np.int64)})
    table = table.sort_values(["mean", "region"], ascending=[False, True], kind="stable")
    return table.head(top).reset_index(drop=True).astype(_REGION_DTYPES)
