"""dataset_description.json, provenance sidecars and atomic writes, also under concurrency."""

from __future__ import annotations

import json
import multiprocessing as mp

import nibabel as nib
import numpy as np
import pytest

from bids_mdd import __version__
from bids_mdd.bids import derivatives
from bids_mdd.bids.atomic import TEMP_MARK, atomic_output, write_json
from bids_mdd.bids.names import derivative_path
from bids_mdd.errors import BidsMddError


def test_dataset_description(real_bids, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("BIDS_MDD_CONTAINER_TYPE", "singularity")
    monkeypatch.setenv("BIDS_MDD_CONTAINER_TAG", "bids_mdd_0.1.0.sif")
    path = derivatives.write_dataset_description(tmp_path, [real_bids])
    description = json.loads(path.read_text())
    assert description["DatasetType"] == "derivative"
    assert description["GeneratedBy"] == [{
        "Name": "bids_mdd", "Version": __version__, "CodeURL": derivatives.CODE_URL,
        "Container": {"Type": "singularity", "Tag": "bids_mdd_0.1.0.sif"}}]
    assert description["SourceDatasets"][0]["DOI"] == "10.18112/openneuro.ds002748.v1.0.5"
    # bids:raw: URIs in the sidecars resolve through DatasetLinks
    assert description["DatasetLinks"] == {"raw": real_bids.resolve().as_uri()}
    ignored = (tmp_path / ".bidsignore").read_text().splitlines()
    assert ignored[1:] == ["*.html", "figures", "logs", "group", "*_xfm.*", "*_metrics.*",
                           "*_predictions.*", "*_attention.*"]
    assert (tmp_path / "README").read_text().startswith(f"Outputs of bids_mdd {__version__}")


def test_container_only_from_markers_that_prove_it(monkeypatch, tmp_path) -> None:
    for name in ("BIDS_MDD_CONTAINER_TYPE", "BIDS_MDD_CONTAINER_TAG", "APPTAINER_CONTAINER",
                 "SINGULARITY_CONTAINER"):
        monkeypatch.delenv(name, raising=False)
    marker = tmp_path / ".containerenv"
    monkeypatch.setattr(derivatives, "PODMAN_MARKER", marker)
    assert derivatives.container_info() is None  # whether or not this host has /.dockerenv
    marker.touch()
    assert derivatives.container_info()["Type"] == "podman"
    monkeypatch.setenv("BIDS_MDD_CONTAINER_TYPE", "docker")
    monkeypatch.setenv("BIDS_MDD_CONTAINER_TAG", "bids_mdd/bids_mdd:9")
    assert derivatives.container_info() == {"Type": "docker", "Tag": "bids_mdd/bids_mdd:9"}
    monkeypatch.setenv("APPTAINER_CONTAINER", "/images/bids_mdd.sif")  # our image, by Apptainer
    assert derivatives.container_info() == {"Type": "singularity", "Tag": "bids_mdd/bids_mdd:9"}


def test_other_pipelines_description_is_kept(tmp_path) -> None:
    write_json(tmp_path / "dataset_description.json",
               {"Name": "x", "GeneratedBy": [{"Name": "fMRIPrep"}]})
    with pytest.raises(BidsMddError, match="belongs to another pipeline") as exc:
        derivatives.write_dataset_description(tmp_path)
    assert exc.value.exit_code == 73
    assert "fMRIPrep" in (tmp_path / "dataset_description.json").read_text()


def test_failed_write_leaves_old_file_and_no_temp(tmp_path) -> None:
    target = tmp_path / "a.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError, match="boom"), atomic_output(target) as tmp:
        tmp.write_text('{"v": ')
        raise RuntimeError("boom")
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_image_and_sidecar(tmp_path) -> None:
    path = derivative_path(tmp_path, subject="01", label="GM", suffix="probseg")
    image = nib.Nifti1Image(np.arange(24, dtype=np.float32).reshape(2, 3, 4), np.eye(4))
    derivatives.write_image(path, image, derivatives.provenance(["bids:raw:sub-01/anat/x"],
                                                                {"fwhm": 8}))
    assert np.array_equal(nib.load(path).get_fdata(), image.get_fdata())
    sidecar = json.loads(path.with_name("sub-01_label-GM_probseg.json").read_text())
    assert sidecar["Parameters"] == {"fwhm": 8}
    # a string, as BIDS requires: "name version, ..."
    assert sidecar["SoftwareVersions"].startswith(f"bids_mdd {__version__}, python 3.")


def _participant_job(args: tuple[str, str, int]) -> None:
    out, source, index = args
    for _ in range(5):
        derivatives.write_dataset_description(out, [source])
        path = derivative_path(out, subject=f"{index:02d}", desc="preproc", suffix="T1w")
        data = np.full((16, 16, 16), index, np.float32)
        derivatives.write_image(path, nib.Nifti1Image(data, np.eye(4)),
                                derivatives.provenance([source]))


def test_eight_concurrent_participant_jobs(tiny_bids, tmp_path) -> None:
    out = tmp_path / "out"
    with mp.get_context("spawn").Pool(8) as pool:
        pool.map(_participant_job, [(str(out), str(tiny_bids), i) for i in range(8)])
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["GeneratedBy"][0]["Name"] == "bids_mdd"
    for index in range(8):
        path = derivative_path(out, subject=f"{index:02d}", desc="preproc", suffix="T1w")
        assert np.all(nib.load(path).get_fdata() == index)
        assert json.loads(path.with_name(path.name.replace(".nii.gz", ".json")).read_text())
    assert not [p for p in out.rglob("*") if p.name.startswith(TEMP_MARK)]
    assert sorted(p.name for p in out.iterdir()) == [
        ".bidsignore", "README", "dataset_description.json"] + [f"sub-{i:02d}" for i in range(8)]


def test_failed_image_write_leaves_neither_image_nor_sidecar(tmp_path) -> None:
    """A write that fails (here: the disk fills up) leaves no sidecar without its image, no
    temporary file, and an earlier version of both untouched."""
    path = tmp_path / "sub-01" / "anat" / "sub-01_desc-preproc_T1w.nii.gz"
    image = nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4))
    derivatives.write_image(path, image, {"Version": 1})

    def disk_full(tmp) -> None:
        tmp.write_bytes(b"\x1f\x8b partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        derivatives.write_file(path, disk_full, {"Version": 2})
    assert json.loads(path.with_name("sub-01_desc-preproc_T1w.json").read_text()) == {
        "Version": 1}
    assert np.all(nib.load(path).get_fdata() == 1)
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "sub-01_desc-preproc_T1w.json", "sub-01_desc-preproc_T1w.nii.gz"]
    fresh = tmp_path / "sub-02_desc-preproc_T1w.nii.gz"
    with pytest.raises(OSError):
        derivatives.write_file(fresh, disk_full, {"Version": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub-01"]


def test_stale_temporaries_of_killed_runs_are_removed(tmp_path) -> None:
    """Left by SIGKILL: a dead process's file on this host goes; a live process's stays; a
    foreign host's goes when this run owns the participant or after a day."""
    import os
    import subprocess
    import time

    from bids_mdd.bids.atomic import remove_stale_temporaries, temporary_path

    dead = subprocess.Popen(["true"])
    dead.wait()
    anat = tmp_path / "sub-01" / "anat"
    anat.mkdir(parents=True)
    mine_dead = temporary_path(anat / "sub-01_T1w.nii.gz")
    mine_dead = mine_dead.with_name(mine_dead.name.replace(f"{os.getpid()}@", f"{dead.pid}@"))
    alive = temporary_path(tmp_path / "dataset_description.json")  # this process: writing
    foreign = tmp_path / (f"{TEMP_MARK}17@othernode-{'a' * 32}-sub-02_desc-x_T1w.nii.gz")
    foreign_top = tmp_path / f"{TEMP_MARK}17@othernode-{'b' * 32}-README"
    foreign_old = tmp_path / f"{TEMP_MARK}17@othernode-{'c' * 32}-dataset_description.json"
    for path in (mine_dead, alive, foreign, foreign_top, foreign_old):
        path.write_bytes(b"")
    day_ago = time.time() - 25 * 3600
    os.utime(foreign_old, (day_ago, day_ago))
    removed = remove_stale_temporaries(tmp_path, lambda rel: rel.startswith("sub-02"))
    assert sorted(p.name for p in removed) == sorted(
        p.name for p in (mine_dead, foreign, foreign_old))
    assert sorted(p.name for p in tmp_path.rglob(f"{TEMP_MARK}*")) == sorted(
        [alive.name, foreign_top.name])
