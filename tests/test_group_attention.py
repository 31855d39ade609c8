"""Group attention maps: a streamed voxelwise mean, and a clear error for mixed grids."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from bids_mdd.errors import BidsMddError
from bids_mdd.group.attention import mean_map
from bids_mdd.spaces.grids import Grid

GRID = Grid(shape=(5, 6, 7), zoom=1.0, origin=(0.0, 0.0, 0.0), res="test")


def _save(path, data, affine=np.eye(4)):
    nib.save(nib.Nifti1Image(np.asarray(data, np.float32), affine), path)
    return path


def test_mean_of_maps(tmp_path) -> None:
    rng = np.random.default_rng(0)
    maps = [rng.random((5, 6, 7)) for _ in range(4)]
    paths = [_save(tmp_path / f"m{i}.nii.gz", m) for i, m in enumerate(maps)]
    image = mean_map(paths, GRID)
    np.testing.assert_allclose(image.get_fdata(), np.mean(maps, axis=0), rtol=1e-6)
    assert image.shape == (5, 6, 7) and image.get_data_dtype() == np.float32


def test_maps_on_another_grid_or_none_are_refused(tmp_path) -> None:
    a = _save(tmp_path / "a.nii.gz", np.ones((5, 6, 7)))
    b = _save(tmp_path / "b.nii.gz", np.ones((5, 6, 7)), np.diag([2, 2, 2, 1]))
    with pytest.raises(BidsMddError, match=r"b.nii.gz: not on the res-test grid \(5, 6, 7\)"
                       ) as error:
        mean_map([a, b], GRID)
    assert error.value.exit_code == 65
    with pytest.raises(BidsMddError, match="no attention maps") as error:
        mean_map([], GRID)
    assert error.value.exit_code == 66
