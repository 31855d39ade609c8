"""Group attention maps: a streamed voxelwise mean, and a clear error for mixed grids."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from bids_mdd.errors import BidsMddError
from bids_mdd.group.attention import mean_map
from bids_mdd.spaces.grids import Grid

pytestmark = pytest.mark.unit  # make test-fast

GRID = Grid(shape=(5, 6, 7), zoom=1.0, origin=(0.0, 0.0, 0.0), res="test")


def _save(path, data, affine=None):
    affine = np.eye(4) if affine is None else affine
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


def _files(name: str, targets: tuple[str, ...], maps: tuple[str, ...], skipped: bool):
    from pathlib import Path

    from bids_mdd.bids.discovery import T1wInput
    from bids_mdd.group.inputs import ParticipantFiles

    return ParticipantFiles(t1w=T1wInput(Path(f"sub-{name}_T1w.nii.gz"), name), gm=None, qc=None,
                            predictions=Path("predictions.tsv"), targets=targets,
                            attention={t: Path(f"{name}_{t}.nii.gz") for t in maps},
                            attention_skipped=skipped)


def test_participants_without_maps_are_reported_not_silently_left_out() -> None:
    from bids_mdd.group.attention import mapped_targets, missing_maps_note
    from bids_mdd.group.report import _attention_section
    from bids_mdd.group.results import GroupResults

    files = [_files("01", ("MDD", "Sleep"), ("MDD", "Sleep"), False),
             _files("02", ("MDD", "Sleep"), (), True),
             _files("03", ("MDD", "Sleep"), (), True),
             _files("04", ("MDD", "Sleep"), ("MDD",), False)]
    assert mapped_targets(files) == ["MDD", "Sleep"]
    assert missing_maps_note(files, "MDD") == ("MDD: 2 participants have no attention maps "
                                               "(run with --no-attention)")
    assert missing_maps_note(files, "Sleep") == (
        "Sleep: 2 participants have no attention maps (run with --no-attention); 1 participant "
        "lacks the map although its predictions list Sleep (sub-04)")
    assert missing_maps_note(files[:1], "MDD") is None
    only_skipped = files[1:3]
    assert missing_maps_note(only_skipped, "MDD").startswith("MDD: 2 participants have no")
    results = GroupResults(n_selected=2, missing=None, qc=None,
                           attention_missing={"MDD": missing_maps_note(only_skipped, "MDD")})
    html = _attention_section(results)
    assert "No attention maps found" in html
    assert "MDD: 2 participants have no attention maps (run with --no-attention)" in html
