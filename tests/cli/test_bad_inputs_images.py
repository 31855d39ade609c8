"""Images and datasets that used to go through wrong or end in a traceback: no orientation,
a .nii beside its .nii.gz, a mistyped filter file, a stale pybids index, overflowing, RGB,
negative-background, thick-slice and misplaced T1w. Each gets its exit code and one line, or
one warning, and the input dataset stays byte-identical."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from test_bad_inputs import checksums, in_process

from bids_mdd.bids.discovery import discover_t1w, load_bids_filters, open_layout
from bids_mdd.errors import BidsMddError
from bids_mdd.preproc.inputs import load_t1w
from bids_mdd.synth.cohort import generate_cohort
from bids_mdd.synth.model import CohortSpec

pytestmark = pytest.mark.unit  # make test-fast

TWO_MM = np.diag([2.0, 2.0, 2.0, 1.0])
SHAPE = (45, 50, 45)  # 90 x 100 x 90 mm at 2 mm


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    """Two SYNTHETIC participants (001, 002) at 4 mm; tests copy it before changing it."""
    bids = tmp_path_factory.mktemp("images") / "bids"
    generate_cohort(bids, CohortSpec(n_mdd=1, n_hc=1, seed=8, resolution=4.0), n_jobs=1)
    return bids


@pytest.fixture
def bids(synthetic, tmp_path) -> Path:
    copy = tmp_path / "bids"
    shutil.copytree(synthetic, copy)
    return copy


def _t1w(bids: Path, label: str, suffix: str = ".nii.gz") -> Path:
    path = bids / f"sub-{label}" / "anat" / f"sub-{label}_T1w{suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _synthetic_data(bids: Path) -> tuple[np.ndarray, np.ndarray]:
    image = nib.load(bids / "sub-001" / "anat" / "sub-001_T1w.nii.gz")
    return np.asarray(image.dataobj), image.affine


def _ellipsoid(inside: float, outside: float) -> np.ndarray:
    z, y, x = np.ogrid[:SHAPE[0], :SHAPE[1], :SHAPE[2]]
    head = ((z - 22) / 18) ** 2 + ((y - 25) / 21) ** 2 + ((x - 22) / 18) ** 2 < 1
    rng = np.random.default_rng(0)
    return np.where(head, inside + rng.normal(0, 0.1 * abs(inside), SHAPE), outside)


def _save(path: Path, data: np.ndarray, sform: np.ndarray | None = TWO_MM,
          qform: np.ndarray | None = None) -> Path:
    image = nib.Nifti1Image(data, None)
    if sform is not None:
        image.header.set_sform(sform, code=1)
    if qform is not None:
        image.header.set_qform(qform, code=1)
    nib.save(image, path)
    return path


def _cli(capsys, bids: Path, tmp_path: Path, *extra: str) -> tuple[int, list[str]]:
    out = tmp_path / "out"
    return in_process(capsys, [str(bids), str(out), "participant", "-w", str(tmp_path / "work"),
                               "--skip-bids-validation", "--preproc-only", "--sloppy",
                               "--nprocs", "2", *extra])


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


# --- images refused before any work ------------------------------------------------------------

def _no_orientation(bids: Path) -> Path:
    """An old Analyze conversion: the voxel size is there, qform_code = sform_code = 0."""
    data, _ = _synthetic_data(bids)
    image = nib.Nifti1Image(data, None)
    image.header.set_zooms((4.0, 4.0, 4.0))
    path = _t1w(bids, "noorient")
    nib.save(image, path)
    assert (nib.load(path).header["qform_code"], nib.load(path).header["sform_code"]) == (0, 0)
    return path


def _overflowing(bids: Path) -> Path:
    data, affine = _synthetic_data(bids)
    data = data.astype(np.float32)
    data[10:12, 20:22, 20:22] = 3e38
    data[30:32, 20:22, 20:22] = -3e38
    return _save(_t1w(bids, "huge"), data, affine)


def _rgb(bids: Path) -> Path:
    data, affine = _synthetic_data(bids)
    channel = np.clip(data / data.max() * 255, 0, 255).astype(np.uint8)
    rgb = np.zeros(data.shape, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    for name in ("R", "G", "B"):
        rgb[name] = channel
    path = _t1w(bids, "rgb")
    nib.save(nib.Nifti1Image(rgb, affine), path)
    return path


@pytest.mark.parametrize(("make", "reason"), [
    (_no_orientation, "the orientation is unknown (qform_code and sform_code are 0); set the "
                      "qform/sform (e.g. from the scanner's DICOM with dcm2niix) before running "
                      "bids_mdd"),
    (_overflowing, "16 voxel(s) beyond +-1e+10 (up to 3e+38), far beyond any T1w intensity "
                   "(corrupt data or a wrong scl_slope); re-export the image"),
    (_rgb, "RGB/structured voxel type (RGB: fields R, G, B) is not a T1w intensity image; export "
           "a single-channel (grayscale) T1w"),
], ids=["no-orientation", "3e38-voxels", "rgb"])
def test_unusable_image_exits_65_with_its_reason(bids, tmp_path, capsys, make, reason) -> None:
    path = make(bids)
    label = path.parent.parent.name.removeprefix("sub-")
    before = checksums(bids)
    code, lines = _cli(capsys, bids, tmp_path, "--participant-label", label)
    assert code == 65, lines
    assert lines == [f"bids_mdd: failed: {path}: {reason}"]
    assert not (tmp_path / "out" / f"sub-{label}").exists()
    assert not (tmp_path / "work" / "bids_mdd_wf").exists()  # refused before any work
    assert checksums(bids) == before


def test_complex_voxels_are_refused(tmp_path) -> None:
    path = tmp_path / "complex.nii.gz"
    nib.save(nib.Nifti1Image(_ellipsoid(300, 0).astype(np.complex64), TWO_MM), path)
    with pytest.raises(BidsMddError) as exc:
        load_t1w(path)
    assert exc.value.exit_code == 65
    assert str(exc.value) == (f"{path}: complex voxel type (complex64) is not a T1w intensity "
                              "image; export the magnitude image")


def test_qform_disagreeing_with_sform_is_named_and_the_sform_used(tmp_path, caplog) -> None:
    data = _ellipsoid(300, 0)
    shifted = TWO_MM.copy()
    shifted[:3, 3] = [5.0, 0.0, 0.0]
    path = _save(tmp_path / "t1w.nii.gz", data, sform=TWO_MM, qform=shifted)
    image = load_t1w(path)
    assert np.allclose(image.affine, TWO_MM)  # already RAS: the sform, unchanged
    assert _warnings(caplog) == [
        f"{path}: the qform and the sform disagree (they place voxels up to 5.0 mm apart); "
        "bids_mdd uses the sform (sform_code 1): fix the header if the qform is the right one"]
    caplog.clear()
    load_t1w(_save(tmp_path / "same.nii.gz", data, sform=TWO_MM, qform=TWO_MM))
    assert _warnings(caplog) == []


# --- warnings and fixes in load_t1w ------------------------------------------------------------

def test_negative_fill_background_is_zeroed_with_a_warning(tmp_path, caplog) -> None:
    data = _ellipsoid(300, -1000)
    path = _save(tmp_path / "t1w.nii.gz", data)
    loaded = load_t1w(path).get_fdata()
    background = data == -1000
    assert np.all(loaded[background] == 0)
    assert np.allclose(loaded[~background], data[~background].astype(np.float32))
    share = 100 * background.mean()
    assert _warnings(caplog) == [
        f"{path}: the background ({share:.0f} % of the voxels) holds the constant -1000, below "
        "every tissue intensity; set to 0 (write a 0 background to silence this)"]
    caplog.clear()
    load_t1w(path, warn=False)
    assert not caplog.records
    # masked, then resampled: the head's edge is blurred into the fill, below 0 in places
    from scipy import ndimage

    blurred = ndimage.uniform_filter(data, 3)  # as linear interpolation blurs
    far = ndimage.binary_erosion(background)
    blurred[far] = -1000
    assert np.mean(blurred[~far] < 0) > 0.05
    edge = _save(tmp_path / "edge.nii.gz", blurred)
    assert np.all(load_t1w(edge).get_fdata()[far] == 0)


def test_negative_background_around_shifted_intensities_is_refused(tmp_path) -> None:
    data = _ellipsoid(-500, -1000)  # intensities minus 1000: tissue is negative too
    path = _save(tmp_path / "t1w.nii.gz", data)
    with pytest.raises(BidsMddError) as exc:
        load_t1w(path)
    assert exc.value.exit_code == 65
    share = 100 * (data == -1000).mean()
    assert str(exc.value) == (
        f"{path}: has a constant background of -1000 ({share:.0f} % of the voxels) and 100 % of "
        "the voxels inside the data below 0: the intensities are shifted, so background and "
        "tissue cannot be told apart; rescale the image to non-negative intensities with a 0 "
        "background")


def test_thick_slices_are_warned_about(tmp_path, caplog) -> None:
    near = np.ones((200, 200, 60), np.float32)
    load_t1w(_save(tmp_path / "near.nii.gz", near, np.diag([0.5, 0.5, 1.5, 1.0])))  # 3:1
    assert _warnings(caplog) == []
    thick = np.ones((200, 200, 30), np.float32)
    path = _save(tmp_path / "thick.nii.gz", thick, np.diag([0.5, 0.5, 3.5, 1.0]))
    load_t1w(path)
    assert _warnings(caplog) == [
        f"{path}: anisotropic 0.5 x 0.5 x 3.5 mm voxels (largest/smallest 7.0, above 3): thick "
        "slices blur tissue boundaries, which biases the tissue volumes (TIV, CSF) and the GM "
        "maps; use a 3D (near-isotropic) T1w if there is one"]


# --- the dataset -------------------------------------------------------------------------------

def test_nii_beside_nii_gz_uses_the_nii_gz_and_the_graph_builds(bids, tmp_path,
                                                                caplog, templateflow_home) -> None:
    from bids_mdd.preproc.workflow import PreprocOptions, init_bids_mdd_wf

    gz = bids / "sub-002" / "anat" / "sub-002_T1w.nii.gz"
    nii = gz.with_name("sub-002_T1w.nii")
    nib.save(nib.load(gz), nii)
    before = checksums(bids)
    inputs = discover_t1w(open_layout(bids, validate=False))
    assert [(i.subject, i.path) for i in inputs] == [
        ("001", bids / "sub-001" / "anat" / "sub-001_T1w.nii.gz"), ("002", gz)]
    expected = (f"{nii}: not processed: {gz} is the same image name compressed; bids_mdd uses "
                "the .nii.gz (delete one of the two)")
    assert _warnings(caplog) == [expected]
    # the graph of both participants builds (it failed on a duplicate node name)
    workflow = init_bids_mdd_wf(t1ws=inputs, bids_dir=bids, output_dir=tmp_path / "o",
                                options=PreprocOptions(sloppy=True))
    assert len(workflow.list_node_names()) > 2
    assert checksums(bids) == before


def test_same_derivative_names_leave_those_files_out(bids, caplog) -> None:
    anat = bids / "sub-002" / "anat"
    echoes = [anat / f"sub-002_echo-{n}_T1w.nii.gz" for n in (1, 2)]
    for echo in echoes:
        shutil.copyfile(anat / "sub-002_T1w.nii.gz", echo)
    (anat / "sub-002_T1w.nii.gz").unlink()
    inputs = discover_t1w(open_layout(bids, validate=False))
    assert [i.subject for i in inputs] == ["001"]
    assert _warnings(caplog) == [
        f"{echoes[0]}, {echoes[1]}: not processed: they would write the same derivatives "
        "(subject 002), differing only in echo; choose one with --bids-filter-file, e.g. "
        '{"t1w": {"echo": ["1", null]}}']
    hint = json.loads(_warnings(caplog)[0].split("e.g. ")[1])  # the filter it suggests works
    chosen = discover_t1w(open_layout(bids, validate=False), bids_filters=hint["t1w"])
    assert [i.path for i in chosen] == [bids / "sub-001/anat/sub-001_T1w.nii.gz", echoes[0]]


@pytest.mark.parametrize(("filters", "reason"), [
    ({"T1w": {"acquisition": "mprage"}},
     "unknown key 'T1w' (did you mean 't1w'?); bids_mdd reads 't1w' (and ignores asl, bold, dwi, "
     "flair, fmap, pet, roi, sbref, t2w)"),
    ({"t1w": {"foo": "x"}}, "'t1w' has unknown entity 'foo'; pybids knows acquisition, "),
    ({"t1w": {"acq": "mprage"}}, "'t1w' has unknown entity 'acq' (did you mean 'acquisition'?)"),
    ({"t1w": {"run": 1.5}}, "'t1w' entity 'run' is 1.5; write a string, an integer, null "
                            "(entity absent) or a non-empty list of them"),
    ({"t1w": {"session": {"label": "01"}}}, "'t1w' entity 'session' is {\"label\": \"01\"}; "),
    ({"t1w": {"session": []}}, "'t1w' entity 'session' is []; "),
    ({"t1w": {"reconstruction": True}}, "'t1w' entity 'reconstruction' is true; "),
], ids=["key-case", "unknown-entity", "short-entity", "float", "object", "empty-list", "bool"])
def test_bad_filter_file_exits_64_naming_file_and_key(synthetic, tmp_path, capsys, filters,
                                                      reason) -> None:
    path = tmp_path / "filters.json"
    path.write_text(json.dumps(filters))
    before = checksums(synthetic)
    code, lines = _cli(capsys, synthetic, tmp_path, "--bids-filter-file", str(path))
    assert code == 64 and len(lines) == 1, lines
    assert lines[0].startswith(f"bids_mdd: error: --bids-filter-file {path}: {reason}"), lines
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("sub-*"))
    assert checksums(synthetic) == before


def test_good_filter_file_values_are_kept(tmp_path) -> None:
    path = tmp_path / "filters.json"
    filters = {"t1w": {"acquisition": None, "run": [1, 2], "session": "01", "echo": 1},
               "bold": {"task": "rest"}}
    path.write_text(json.dumps(filters))
    assert load_bids_filters(path) == filters["t1w"]


def _add_participant(bids: Path, label: str) -> Path:
    source = bids / "sub-001" / "anat"
    target = bids / f"sub-{label}" / "anat"
    target.mkdir(parents=True)
    for path in source.iterdir():
        shutil.copyfile(path, target / path.name.replace("sub-001", f"sub-{label}"))
    return target / f"sub-{label}_T1w.nii.gz"


def test_stale_database_is_reindexed(bids, tmp_path, capsys, caplog) -> None:
    caplog.set_level(logging.INFO)
    database = tmp_path / "db"
    assert [i.subject for i in discover_t1w(open_layout(bids, database_dir=database))] == [
        "001", "002"]
    added = _add_participant(bids, "003")
    caplog.clear()
    inputs = discover_t1w(open_layout(bids, database_dir=database))
    assert [i.subject for i in inputs] == ["001", "002", "003"]
    infos = [r.getMessage() for r in caplog.records if "--bids-database-dir" in r.getMessage()]
    assert infos == [f"--bids-database-dir {database}: {bids} changed after the index was "
                     f"written; reindexing {bids}"]
    assert not list(database.glob(".bids_mdd-index-*"))  # the scratch index is gone
    # on the command line: a participant added after indexing is found, not "not found"; its
    # T1w is one load_t1w refuses, so the run stops before any work
    _overflowing(bids)
    huge = bids / "sub-huge" / "anat" / "sub-huge_T1w.nii.gz"
    before = checksums(bids)
    code, lines = _cli(capsys, bids, tmp_path, "--bids-database-dir", str(database),
                       "--participant-label", "huge")
    assert code == 65 and len(lines) == 1 and lines[0].startswith(
        f"bids_mdd: failed: {huge}: 16 voxel(s) beyond"), lines
    assert checksums(bids) == before
    assert added.is_file()


def test_database_of_another_dataset_is_refused(bids, synthetic, tmp_path) -> None:
    database = tmp_path / "db"
    open_layout(synthetic, database_dir=database)
    with pytest.raises(BidsMddError) as exc:
        open_layout(bids, database_dir=database)
    assert exc.value.exit_code == 64
    assert str(exc.value) == (
        f"--bids-database-dir {database} holds the index of {synthetic}, not of {bids}: give "
        f"each dataset its own folder (or delete {database / 'layout_index.sqlite'})")


def _preprocessed(monkeypatch) -> list:
    """Preprocessing and the model step replaced by a recorder of the T1w given to them."""
    given: list = []
    monkeypatch.setattr("bids_mdd.participant.runner.preprocess",
                        lambda inputs, *args, **kwargs: given.append(inputs) or [])
    monkeypatch.setattr("bids_mdd.participant.runner.apply_models", lambda *a, **k: [])
    return given


@pytest.mark.parametrize("validate", [False, True])
def test_a_t1w_sidecar_that_is_not_json(bids, caplog, capsys, monkeypatch, validate) -> None:
    """pybids parsed every sidecar while indexing: one broken file was its OSError traceback
    under --skip-bids-validation. bids_mdd reads no sidecar: a warning names it and the run
    goes on; validated, the validator refuses the dataset naming the file (16)."""
    sidecar = bids / "sub-001" / "anat" / "sub-001_T1w.json"
    sidecar.write_text('{"RepetitionTime": 2.3,')
    before = checksums(bids)
    given = _preprocessed(monkeypatch)
    args = [str(bids), str(bids.parent / "out"), "participant", "--preproc-only",
            "-w", str(bids.parent / "w")]
    code, lines = in_process(capsys, args + ([] if validate else ["--skip-bids-validation"]))
    if validate:
        assert code == 16 and not given, lines
        assert "JSON_INVALID x1, first in /sub-001/anat/sub-001_T1w.json" in lines[0], lines
    else:
        assert code == 0 and [t1w.subject for t1w in given[0]] == ["001", "002"], lines
        assert [m for m in _warnings(caplog) if "JSON" in m] == [
            f"{sidecar}: not valid JSON (Expecting property name enclosed in double quotes: "
            "line 1 column 24 (char 23)); bids_mdd reads no sidecar metadata and goes on, but "
            "fix it for other BIDS tools"]
    assert checksums(bids) == before


@pytest.mark.parametrize("validate", [False, True])
def test_a_fifo_or_folder_named_as_a_t1w_is_skipped_with_a_line(bids, caplog, capsys,
                                                                 monkeypatch, validate) -> None:
    """Opening a FIFO blocks until something writes to it: a named pipe in place of a T1w
    used to hang the whole run before the good participants. Neither it nor a folder of a
    T1w's name reaches preprocessing; each gets one warning naming what it is."""
    import os

    fifo, folder = _t1w(bids, "pipe"), _t1w(bids, "folder")
    os.mkfifo(fifo)
    folder.mkdir()
    before = checksums(bids)
    given = _preprocessed(monkeypatch)
    out = bids.parent / "out"
    args = [str(bids), str(out), "participant", "--preproc-only", "-w", str(bids.parent / "w")]
    code, lines = in_process(capsys, args + ([] if validate else ["--skip-bids-validation"]))
    if validate:  # the validator reads past the FIFO and names the folder: the dataset is bad
        assert code == 16 and not given, lines
        assert "NIFTI_HEADER_UNREADABLE x1, first in /sub-folder/anat/" in lines[0], lines
        assert checksums(bids) == before
        return
    assert code == 0
    assert [t1w.subject for t1w in given[0]] == ["001", "002"]
    fix = "not a file; a T1w must be a .nii or .nii.gz file (replace it with one)"
    assert sorted(m for m in _warnings(caplog) if "not processed" in m) == [
        f"{folder}: not processed: a folder, {fix}",
        f"{fifo}: not processed: a FIFO (named pipe), {fix}"]
    assert checksums(bids) == before


def test_a_participant_label_too_long_for_derivative_names_exits_65(bids, capsys) -> None:
    """A 180-character label is legal BIDS, but its derivatives' names, with the atomic
    writer's temporary prefix, pass the file system's 255: one line naming the most the label
    may have, before any work, instead of ENAMETOOLONG mid-run."""
    import re

    label = "a" * 180
    source = _t1w(bids, label)
    shutil.copyfile(bids / "sub-001" / "anat" / "sub-001_T1w.nii.gz", source)
    before = checksums(bids)
    out = bids.parent / "out"
    code, lines = in_process(capsys, [str(bids), str(out), "participant", "--participant-label",
                                      label, "--skip-bids-validation", "--preproc-only",
                                      "-w", str(bids.parent / "w")])
    assert code == 65 and len(lines) == 1, lines
    found = re.fullmatch(rf"bids_mdd: failed: {re.escape(str(source))}: its derivatives would "
                         r"have file names of up to (\d+) characters, over the (\d+) that fit "
                         r"the file system's 255 with bids_mdd's temporary prefix; rename the "
                         r"participant \(label of 180 characters\) to at most (\d+) "
                         r"characters", lines[0])
    assert found, lines
    longest, limit, most = map(int, found.groups())
    assert longest > 255 > limit and most == 180 - (longest - limit)
    assert not (out / f"sub-{label}").exists() and checksums(bids) == before


def test_t1w_outside_any_participant_folder_is_named(bids, caplog) -> None:
    stray = bids / "ses-1" / "anat" / "sub-003_ses-1_T1w.nii.gz"
    stray.parent.mkdir(parents=True)
    shutil.copyfile(bids / "sub-001" / "anat" / "sub-001_T1w.nii.gz", stray)
    expected = [f"{stray}: not processed: not inside a sub-<label>/ folder; move it to "
                "sub-<label>/[ses-<label>/]anat/"]
    for validate in (False, True):
        caplog.clear()
        assert [i.subject for i in discover_t1w(open_layout(bids, validate=validate))] == [
            "001", "002"]
        assert _warnings(caplog) == expected
    caplog.clear()  # a selection names it only when it is one of the selected participants
    discover_t1w(open_layout(bids, validate=False), participant_labels=["001"])
    assert _warnings(caplog) == []
    with pytest.raises(BidsMddError) as exc:  # 003 has no folder: not found, the file named
        discover_t1w(open_layout(bids, validate=False), participant_labels=["sub-003"])
    assert exc.value.exit_code == 18
    assert _warnings(caplog) == expected
