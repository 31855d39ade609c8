"""The group cluster table and region summary: planted spheres on the classifier grid (one
positive inside the left hippocampus, one negative elsewhere), the empty table, min_voxels,
connectivity and sign splitting, and region_summary against sums computed by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from bids_mdd.atlas import load_aal2
from bids_mdd.group.clusters import (
    CLUSTER_COLUMNS,
    REGION_COLUMNS,
    atlas_labels,
    cluster_table,
    region_summary,
    regions_text,
)
from bids_mdd.spaces.grids import CLASSIFIER_GRID as GRID

pytestmark = pytest.mark.unit  # make test-fast

RADIUS = 2  # voxels: a sphere of 33 voxels
VOXEL_MM3 = 1.5 ** 3
NEGATIVE_CENTRE = (60, 40, 60)  # 27 mm posterior of the hippocampus band, on the midline


def hippocampus_l() -> int:
    """The AAL2 label index of Hippocampus_L."""
    names = load_aal2().labels.set_index("index")["name"]
    (index,) = [i for i in load_aal2().indices_of(["HIP"])["HIP"] if names[i] == "Hippocampus_L"]
    return index


def sphere(centre: tuple[int, int, int], radius: int = RADIUS) -> np.ndarray:
    """Boolean ball of ``radius`` voxels around ``centre`` on the grid."""
    i, j, k = np.ogrid[tuple(slice(0, n) for n in GRID.shape)]
    return ((i - centre[0]) ** 2 + (j - centre[1]) ** 2 + (k - centre[2]) ** 2) <= radius ** 2


def deepest_voxel(label: int) -> tuple[int, int, int]:
    """The voxel of ``label`` farthest from any other label (so a small ball stays inside)."""
    depth = ndimage.distance_transform_edt(atlas_labels(GRID) == label)
    return tuple(int(v) for v in np.unravel_index(np.argmax(depth), GRID.shape))


@pytest.fixture(scope="module")
def planted() -> dict[str, object]:
    """t, effect and significance maps with a positive ball in Hippocampus_L and a negative one."""
    hip = deepest_voxel(hippocampus_l())
    positive, negative = sphere(hip), sphere(NEGATIVE_CENTRE)
    t = np.zeros(GRID.shape)
    effect = np.zeros(GRID.shape)
    t[positive], effect[positive] = 5.0, 0.3
    t[negative], effect[negative] = -4.0, -0.2
    t[hip], t[NEGATIVE_CENTRE] = 8.0, -6.0
    noise = np.random.default_rng(0).normal(0, 1, GRID.shape)  # not significant: ignored
    t[~(positive | negative)] = noise[~(positive | negative)]
    return {"t": t, "effect": effect, "significant": positive | negative, "hip": hip,
            "positive": positive, "negative": negative}


def mni(voxel: tuple[int, int, int]) -> np.ndarray:
    return (GRID.affine @ np.array([*voxel, 1.0]))[:3]


def test_planted_spheres_give_two_clusters(planted: dict[str, object]) -> None:
    table = cluster_table(planted["t"], planted["effect"], planted["significant"])
    assert list(table.columns) == list(CLUSTER_COLUMNS)
    assert len(table) == 2
    assert table["cluster_id"].tolist() == [1, 2]
    assert table["sign"].tolist() == ["MDD>HC", "MDD<HC"]
    assert table["peak_t"].tolist() == [8.0, -6.0]
    assert int(planted["positive"].sum()) == int(planted["negative"].sum()) == 33
    assert table["size_voxels"].tolist() == [33, 33]
    np.testing.assert_allclose(table["size_mm3"], [33 * VOXEL_MM3] * 2)  # 111.375 mm3
    np.testing.assert_allclose(table.loc[0, ["peak_x", "peak_y", "peak_z"]].to_numpy(float),
                               mni(planted["hip"]))
    np.testing.assert_allclose(table.loc[1, ["peak_x", "peak_y", "peak_z"]].to_numpy(float),
                               [0.0, -66.0, 18.0])
    np.testing.assert_allclose(table["mean_effect"], [0.3, -0.2])
    assert table.loc[0, "peak_label"] == "Hippocampus_L"
    assert table.loc[0, "regions"].split("; ")[0] == "Hippocampus_L (100.0 %)"


def test_regions_text_shares_and_outside_atlas() -> None:
    left, right = load_aal2().indices_of(["AMYG"])["AMYG"]  # Amygdala_L, Amygdala_R
    labels = np.array([left] * 150 + [right] * 45 + [0] * 4 + [2001])  # 75 %, 22.5 %, 2 %, 0.5 %
    names = load_aal2().labels.set_index("index")["name"]
    assert regions_text(labels) == (f"{names[left]} (75.0 %); {names[right]} (22.5 %); "
                                    "outside atlas (2.0 %)")


def test_nothing_significant_gives_an_empty_table(planted: dict[str, object]) -> None:
    table = cluster_table(planted["t"], planted["effect"], np.zeros(GRID.shape, dtype=bool))
    assert len(table) == 0
    assert list(table.columns) == list(CLUSTER_COLUMNS)
    assert table["peak_t"].dtype == np.float64


def test_min_voxels_drops_a_single_voxel(planted: dict[str, object]) -> None:
    significant = planted["significant"].copy()
    t = planted["t"].copy()
    significant[100, 100, 100], t[100, 100, 100] = True, 9.0  # isolated, and the largest |t|
    with_it = cluster_table(t, planted["effect"], significant)
    assert len(with_it) == 3 and with_it.loc[0, "size_voxels"] == 1
    without = cluster_table(t, planted["effect"], significant, min_voxels=2)
    assert without["size_voxels"].tolist() == [33, 33]
    assert without["cluster_id"].tolist() == [1, 2]


def test_connectivity_and_sign_split() -> None:
    significant = np.zeros(GRID.shape, dtype=bool)
    t = np.zeros(GRID.shape)
    significant[10, 10, 10] = significant[11, 11, 11] = True  # corner neighbours
    t[10, 10, 10], t[11, 11, 11] = 3.0, 4.0
    significant[20, 20, 20] = significant[20, 20, 21] = True  # face neighbours, opposite signs
    t[20, 20, 20], t[20, 20, 21] = 3.5, -3.5
    effect = np.ones(GRID.shape)
    assert cluster_table(t, effect, significant)["size_voxels"].tolist() == [2, 1, 1]
    six = cluster_table(t, effect, significant, connectivity=6)
    assert six["size_voxels"].tolist() == [1, 1, 1, 1]
    assert sorted(six["sign"]) == ["MDD<HC", "MDD>HC", "MDD>HC", "MDD>HC"]
    assert six.loc[0, "peak_label"] == "outside atlas"  # a corner of the bounding box
    with pytest.raises(ValueError, match="connectivity"):
        cluster_table(t, effect, significant, connectivity=8)
    with pytest.raises(ValueError, match="grid"):
        cluster_table(t[:-1], effect, significant)


def test_region_summary_ranks_a_filled_region_first() -> None:
    labels = atlas_labels(GRID)
    assert atlas_labels(GRID) is labels  # cached per grid
    hip = hippocampus_l()
    values = np.where(labels == hip, 10.0, 1.0)
    n_hip, n_atlas = int((labels == hip).sum()), int((labels != 0).sum())
    summary = region_summary(values, None, GRID, top=3)
    assert list(summary.columns) == list(REGION_COLUMNS) and len(summary) == 3
    assert summary.loc[0, "region"] == "Hippocampus_L"
    assert summary.loc[0, "voxels"] == n_hip
    assert summary.loc[0, "mean"] == pytest.approx(10.0)
    share = 10.0 * n_hip / (10.0 * n_hip + (n_atlas - n_hip))
    assert summary.loc[0, "share_of_total"] == pytest.approx(share)
    assert summary.loc[1, "mean"] == pytest.approx(1.0)
    masked = region_summary(values, labels != hip, GRID, top=200)
    assert "Hippocampus_L" not in set(masked["region"])
    assert masked["share_of_total"].sum() == pytest.approx(1.0)
    assert isinstance(masked, pd.DataFrame) and masked["voxels"].sum() == n_atlas - n_hip
