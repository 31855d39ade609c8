"""Preprocessing pieces that need no registration: grids, input checks, skull-strip detection."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from bids_mdd.errors import BidsMddError
from bids_mdd.preproc.ants_steps import PreprocSettings, is_skull_stripped
from bids_mdd.preproc.inputs import load_t1w
from bids_mdd.preproc.qc import dice, normalized_correlation
from bids_mdd.spaces.grids import CLASSIFIER_GRID, DFRN_GRID

pytestmark = pytest.mark.unit  # make test-fast


def corner(grid, index):
    return grid.affine @ np.array([*index, 1.0])


def test_grids_match_the_papers_bounding_boxes() -> None:
    assert CLASSIFIER_GRID.image().shape == (121, 145, 121)
    assert list(corner(CLASSIFIER_GRID, (0, 0, 0))[:3]) == [-90, -126, -72]
    assert list(corner(CLASSIFIER_GRID, (120, 144, 120))[:3]) == [90, 90, 108]
    assert DFRN_GRID.image().shape == (182, 218, 182)
    assert list(corner(DFRN_GRID, (181, 217, 181))[:3]) == [91, 91, 109]
    assert DFRN_GRID.image().header.get_xyzt_units()[0] == "mm"
    with pytest.raises(ValueError, match="not on the 1p5 grid"):
        CLASSIFIER_GRID.image(np.zeros((2, 2, 2)))


def save(tmp_path, data, affine=None, name="t1w.nii.gz"):
    path = tmp_path / name
    image = nib.Nifti1Image(np.asarray(data, np.float32), None)
    image.header.set_sform(np.eye(4) if affine is None else affine, code=1)
    nib.save(image, path)  # sform only: a singular one is stored as given
    return path


TWO_MM = np.diag([2.0, 2.0, 2.0, 1.0])
SHAPE = (45, 50, 45)  # 90 x 100 x 90 mm at 2 mm


def test_single_volume_4d_is_squeezed_and_reoriented(tmp_path) -> None:
    las = np.diag([-2.0, 2.0, 2.0, 1.0])
    image = load_t1w(save(tmp_path, np.random.default_rng(0).random((*SHAPE, 1)), las))
    assert image.shape == SHAPE
    assert nib.aff2axcodes(image.affine) == ("R", "A", "S")


def _sheared() -> np.ndarray:
    affine = TWO_MM.copy()
    affine[0, 1] = 0.3  # x also moves with j
    return affine


def _enclosed_nan(share: float) -> np.ndarray:
    data = np.ones(SHAPE)
    inner = np.zeros(SHAPE, bool)
    inner[5:-5, 5:-5, 5:-5] = True
    picks = np.random.default_rng(1).random(SHAPE) < share
    data[inner & picks] = np.nan
    return data


@pytest.mark.parametrize(("data", "affine", "message"), [
    (np.ones((*SHAPE, 3)), TWO_MM, "is 4D with 3 volumes"),
    (np.ones((45, 50)), TWO_MM, "must be a 3D volume"),
    (np.zeros(SHAPE), TWO_MM, "all zero or NaN"),
    (np.full(SHAPE, np.nan), TWO_MM, "all zero or NaN"),
    (np.ones(SHAPE), np.diag([1.0, 1.0, 0.0, 1.0]), "singular or non-finite affine"),
    (np.ones(SHAPE), _sheared(), r"has a sheared affine \(axes 0.148 from orthogonal\); ANTs "
                                 "needs orthonormal direction cosines: reslice"),
    (np.ones(SHAPE), np.diag([10.0, 10.0, 10.0, 1.0]),
     r"has 10 x 10 x 10 mm voxels, outside 0.3-4.0 mm; check the header's voxel size"),
    (np.ones((200, 200, 200)), np.diag([0.05, 0.05, 0.05, 1.0]),
     "has 0.05 x 0.05 x 0.05 mm voxels, outside 0.3-4.0 mm"),
    (np.ones((45, 50, 10)), TWO_MM, "covers only 90 x 100 x 20 mm; a T1w must cover the whole "
                                    "brain"),
    (_enclosed_nan(0.01), TWO_MM, r"0.5 % of the voxels inside the image's data are NaN or Inf;"
                                  " re-export"),
])
def test_bad_images_get_one_line_reasons(tmp_path, data, affine, message) -> None:
    path = save(tmp_path, data, affine)
    with pytest.raises(BidsMddError, match=message) as exc:
        load_t1w(path)
    assert exc.value.exit_code == 65 and str(path) in str(exc.value)
    assert "\n" not in str(exc.value)


def test_nan_background_and_a_few_nan_voxels_are_zeroed_with_a_warning(tmp_path,
                                                                       caplog) -> None:
    data = _enclosed_nan(0.0002)
    data[:3] = np.nan  # a NaN background along one edge
    path = save(tmp_path, data, TWO_MM)
    image = load_t1w(path)
    assert np.isfinite(image.get_fdata()).all()
    enclosed = int(np.isnan(data[3:]).sum())
    assert 0 < enclosed < 0.001 * data.size
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: {int(np.isnan(data).sum())} NaN/Inf voxel(s) ({enclosed} inside the data) "
        "set to 0"]
    caplog.clear()
    load_t1w(path, warn=False)
    assert not caplog.records


def test_truncated_file(tmp_path) -> None:
    path = save(tmp_path, np.ones(SHAPE), TWO_MM)
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    with pytest.raises(BidsMddError, match="cannot be read as NIfTI") as exc:
        load_t1w(path)
    assert exc.value.exit_code == 65


def test_skull_stripped_detection(real_bids, tmp_path) -> None:
    assert is_skull_stripped(str(real_bids / "sub-02/anat/sub-02_T1w.nii.gz"))
    head = np.random.default_rng(0).random((100, 120, 100)) + 1.0  # 2 mm: 9.6 L non-zero
    assert not is_skull_stripped(str(save(tmp_path, head, np.diag([2.0, 2.0, 2.0, 1.0]))))


def test_metrics() -> None:
    a = np.zeros((4, 4), bool)
    a[:2] = True
    assert dice(a, a) == 1.0 and dice(a, ~a) == 0.0
    x = np.arange(16.0).reshape(4, 4)
    assert normalized_correlation(x, 2 * x + 3, a) == pytest.approx(1.0)


def test_bids_uri_keeps_symlinked_inputs_inside_the_dataset(tmp_path) -> None:
    from bids_mdd.bids.discovery import T1wInput
    from bids_mdd.preproc.workflow import bids_uri

    store = tmp_path / "annex" / "objects" / "x.nii.gz"  # where git-annex keeps the content
    store.parent.mkdir(parents=True)
    store.write_bytes(b"")
    link = tmp_path / "bids" / "sub-01" / "anat" / "sub-01_T1w.nii.gz"
    link.parent.mkdir(parents=True)
    link.symlink_to(store)
    assert (bids_uri(T1wInput(link, "01"), tmp_path / "bids")
            == "bids:raw:sub-01/anat/sub-01_T1w.nii.gz")


def test_segmentation_leaves_no_temporary_files(tmp_path, monkeypatch) -> None:
    """antspyx's atropos writes probability maps to tempfile names and never deletes them."""
    import tempfile

    from bids_mdd.preproc.ants_steps import segment_tissues

    system_tmp = tmp_path / "tmp"
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    rng = np.random.default_rng(0)
    classes = rng.integers(0, 3, (24, 24, 24))
    t1w = (np.choose(classes, [30.0, 60.0, 90.0]) + rng.normal(0, 3, classes.shape))
    nib.save(nib.Nifti1Image(t1w.astype(np.float32), np.eye(4)), tmp_path / "t1w.nii.gz")
    nib.save(nib.Nifti1Image(np.ones(classes.shape, np.uint8), np.eye(4)),
             tmp_path / "mask.nii.gz")
    out = tmp_path / "out"
    out.mkdir()
    csf, gm, wm = segment_tissues(str(tmp_path / "t1w.nii.gz"), str(tmp_path / "mask.nii.gz"),
                                  str(out), PreprocSettings.for_mode(True, "kmeans").segmentation)
    gm_map = np.asarray(nib.load(gm).dataobj)
    assert dice(gm_map > 0.5, classes == 1) > 0.95
    assert list(system_tmp.iterdir()) == []
    assert sorted(p.name for p in out.iterdir()) == [
        "label-CSF_probseg.nii.gz", "label-GM_probseg.nii.gz", "label-WM_probseg.nii.gz"]
    assert tempfile.tempdir == str(system_tmp)
