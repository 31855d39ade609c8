"""The participant preprocessing workflow end to end (``--sloppy``, small synthetic images)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bids_mdd.bids.names import derivative_path
from bids_mdd.bids.outputs import OUTPUTS
from bids_mdd.cli.run import main
from bids_mdd.preproc.workflow import TOP_WORKFLOW
from bids_mdd.synth.cohort import generate_cohort
from bids_mdd.synth.model import CohortSpec

SPACE = "MNI152NLin2009cAsym"


def add_bad_subject(bids: Path, label: str, data: np.ndarray) -> None:
    folder = bids / f"sub-{label}" / "anat"
    folder.mkdir(parents=True)
    nib.save(nib.Nifti1Image(data.astype(np.float32), np.eye(4)),
             folder / f"sub-{label}_T1w.nii.gz")


def run(bids: Path, out: Path, work: Path, *extra: str) -> int:
    return main([str(bids), str(out), "participant", "-w", str(work), "--sloppy",
                 "--nprocs", "2", "--models", "demo", *extra])


def run_unvalidated(bids: Path, out: Path, work: Path, *extra: str) -> int:
    """For datasets with deliberately bad T1w, which the BIDS validator refuses (e.g.
    T1W_FILE_WITH_TOO_MANY_DIMENSIONS): the point is how preprocessing fails."""
    return run(bids, out, work, "--skip-bids-validation", *extra)


@pytest.fixture(scope="module")
def preprocessed(templateflow_home, tmp_path_factory) -> dict:
    """A whole-head synthetic subject (3 mm) beside two unusable ones, preprocessed once."""
    root = tmp_path_factory.mktemp("preproc")
    bids = root / "bids"
    generate_cohort(bids, CohortSpec(n_mdd=1, n_hc=0, seed=4, resolution=3.0), n_jobs=1)
    add_bad_subject(bids, "bad4d", np.ones((8, 8, 8, 3)))
    add_bad_subject(bids, "badzero", np.zeros((8, 8, 8)))
    paths = {"bids": bids, "out": root / "out", "work": root / "work"}
    return {**paths, "code": run_unvalidated(paths["bids"], paths["out"], paths["work"])}


def output(out: Path, name: str) -> Path:
    return derivative_path(out, subject="001", **OUTPUTS[name])


def test_bad_participants_fail_alone(preprocessed, capsys) -> None:
    assert preprocessed["code"] == 1
    logs = preprocessed["out"] / "logs"
    crashes = sorted(p.name for p in logs.iterdir())
    assert crashes == ["crash-subject-bad4d.txt", "crash-subject-badzero.txt"]
    assert "is 4D with 3 volumes" in (logs / crashes[0]).read_text()
    assert output(preprocessed["out"], "gm_smoothed").is_file()


def test_every_output_with_sidecar(preprocessed) -> None:
    out = preprocessed["out"]
    for name in OUTPUTS:
        path = output(out, name)
        assert path.is_file(), path
        if name.startswith("fig_"):
            assert path.read_text().lstrip().startswith("<?xml") and "<svg" in path.read_text()
            continue
        sidecar = json.loads(path.with_name(path.name.split(".")[0] + ".json").read_text())
        assert sidecar["Parameters"]["Sloppy"] is True
        assert sidecar["Sources"] == ["bids:raw:sub-001/anat/sub-001_T1w.nii.gz"]
        assert "antspyx" in sidecar["SoftwareVersions"]
    assert nib.load(output(out, "gm_modulated")).shape == (121, 145, 121)
    assert nib.load(output(out, "t1w_mni")).shape == (182, 218, 182)
    assert np.allclose(nib.load(output(out, "t1w_mni")).affine[:3, 3], [-90, -126, -72])


def test_participant_report(preprocessed) -> None:
    html = (preprocessed["out"] / "sub-001.html").read_text()
    assert "figures/sub-001_desc-segmentation.svg" in html and "--sloppy" in html
    assert "<h3>Predictions</h3>" in html and "demo-synthetic-densenet121" in html
    assert "SYNTHETIC" in html and "figures/sub-001_desc-attentionAnxiety.svg" in html
    assert (preprocessed["out"] / "sub-bad4d.html").read_text().count("not preprocessed") == 1


def test_demo_models_were_applied(preprocessed) -> None:
    """--models demo: the packaged demo bundles ran on the participant's derivatives."""
    out = preprocessed["out"]
    table = pd.read_csv(derivative_path(out, subject="001", suffix="predictions",
                                        extension=".tsv"), sep="\t")
    assert list(table["target"]) == ["MDD", "Anhedonia", "Anxiety", "Appetite", "Sleep",
                                     "Suicidality"]
    assert (table["n_models"] == 5).all() and table["value"].between(-10, 10).all()
    for target, res, shape in (("MDD", "1p5", (121, 145, 121)),
                               ("Sleep", "1", (182, 218, 182))):
        path = derivative_path(out, subject="001", space=SPACE, res=res, desc=target,
                               suffix="attention")
        assert nib.load(path).shape == shape
        figure = derivative_path(out, subject="001", datatype="figures",
                                 desc=f"attention{target}", extension=".svg")
        assert "<svg" in figure.read_text()


def test_modulation_keeps_native_gm_volume(preprocessed) -> None:
    out = preprocessed["out"]
    native = nib.load(output(out, "gm"))
    native_ml = native.get_fdata().sum() * np.prod(native.header.get_zooms()) / 1000
    modulated_ml = nib.load(output(out, "gm_modulated")).get_fdata().sum() * 1.5**3 / 1000
    assert modulated_ml == pytest.approx(native_ml, rel=0.02)
    smoothed_ml = nib.load(output(out, "gm_smoothed")).get_fdata().sum() * 1.5**3 / 1000
    assert smoothed_ml == pytest.approx(modulated_ml, rel=0.02)


def test_qc_metrics_are_plausible(preprocessed) -> None:
    metrics = json.loads(output(preprocessed["out"], "qc").read_text())
    truth = json.loads((preprocessed["bids"] / "ground_truth.json").read_text())["subjects"][0]
    assert metrics["tiv_ml"] == pytest.approx(truth["brain_volume_ml"], rel=0.15)
    assert metrics["gm_ml"] + metrics["wm_ml"] + metrics["csf_ml"] == pytest.approx(
        metrics["tiv_ml"], rel=0.02)
    assert metrics["template_mask_dice"] > 0.85 and metrics["template_ncc"] > 0.7


def test_rerun_with_other_thread_counts_recomputes_nothing(preprocessed) -> None:
    """Threads are not part of any cache hash: only the (always rewritten) sink runs again, and
    the sidecars keep the threads that computed the cached results."""
    work = preprocessed["work"] / TOP_WORKFLOW / "anat_preproc_subject001"
    results = sorted(work.glob("*/result_*.pklz"))
    before = {p: p.stat().st_mtime_ns for p in results if "derivatives" not in str(p)}
    assert len(before) == 9
    sidecar = output(preprocessed["out"], "gm_smoothed").with_suffix("").with_suffix(".json")
    threads = json.loads(sidecar.read_text())["Parameters"]["Threads"]
    assert threads == {"N4": 1, "Registration": 1, "BrainMask": 1, "Segmentation": 1,
                       "ModulatedGM": 1, "NormalizedT1w": 1}  # 2 CPUs, 3 T1w: 1 thread each
    for nprocs, omp in (("1", "2"), ("2", "2")):
        assert run_unvalidated(preprocessed["bids"], preprocessed["out"], preprocessed["work"],
                               "--participant-label", "001", "--nprocs", nprocs,
                               "--omp-nthreads", omp) == 0
        assert {p: p.stat().st_mtime_ns for p in before} == before
    assert json.loads(sidecar.read_text())["Parameters"]["Threads"] == threads


def test_resume_after_interruption(preprocessed) -> None:
    """Lose everything after registration (as a kill would): only the rest is recomputed."""
    work = preprocessed["work"] / TOP_WORKFLOW / "anat_preproc_subject001"
    register = next(work.glob("register/result_*.pklz"))
    stamp = register.stat().st_mtime_ns
    for node in ("segment", "gm_to_mni", "qc"):
        for path in sorted((work / node).rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
    os.remove(output(preprocessed["out"], "gm_smoothed"))
    assert run_unvalidated(preprocessed["bids"], preprocessed["out"], preprocessed["work"],
                           "--participant-label", "001") == 0
    assert register.stat().st_mtime_ns == stamp
    assert next(work.glob("segment/result_*.pklz")).is_file()
    assert output(preprocessed["out"], "gm_smoothed").is_file()


def test_all_bad_exits_65(tmp_path, capsys) -> None:
    bids = tmp_path / "bids"
    bids.mkdir()
    (bids / "dataset_description.json").write_text('{"Name": "bad", "BIDSVersion": "1.10.0"}')
    add_bad_subject(bids, "01", np.full((90, 100, 90), np.nan))
    add_bad_subject(bids, "02", np.ones((90, 100, 90, 2)))
    assert run_unvalidated(bids, tmp_path / "out", tmp_path / "work") == 65
    err = capsys.readouterr().err
    assert "sub-01_T1w.nii.gz: has no finite non-zero voxel" in err
    assert "sub-02_T1w.nii.gz: is 4D with 2 volumes" in err


def test_skull_stripped_input(templateflow_home, tmp_path) -> None:
    bids = tmp_path / "bids"
    generate_cohort(bids, CohortSpec(n_mdd=0, n_hc=1, seed=6, resolution=3.0,
                                     skull_stripped=True), n_jobs=1)
    assert run(bids, tmp_path / "out", tmp_path / "work") == 0
    mask = nib.load(output(tmp_path / "out", "brain_mask")).get_fdata() > 0
    truth = nib.load(bids / "derivatives/synthetic-truth/sub-001/anat/"
                     "sub-001_desc-brain_mask.nii.gz").get_fdata() > 0
    assert 2 * (mask & truth).sum() / (mask.sum() + truth.sum()) > 0.97
    sidecar = json.loads(output(tmp_path / "out", "brain_mask").with_suffix("").with_suffix(
        ".json").read_text())
    assert sidecar["Parameters"]["SkullStrip"] == "auto"
