"""A corpus of bad inputs, made by fixtures (no committed binaries), run through the CLI as a
hostile user would: each case gets its exit code, one line on stderr naming the file and the
fix, an input dataset left byte-identical, no partial derivatives, and the good participant
beside it complete."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_mdd.cli.run import main
from bids_mdd.models.inference import packaged_models_dir
from bids_mdd.synth.cohort import generate_cohort
from bids_mdd.synth.mni import MNI_DIR
from bids_mdd.synth.model import CohortSpec
from conftest import CreatesFile, checksums, relist_weights

TWO_MM = np.diag([2.0, 2.0, 2.0, 1.0])
SHAPE = (60, 70, 60)  # 120 x 140 x 120 mm at 2 mm

# label -> (expected single-participant exit code, text the one-line reason must hold)
T1W_CASES = {
    "trunc": (65, "cannot be read as NIfTI"),
    "text": (65, "cannot be read as NIfTI"),
    "mismatch": (65, "cannot be read as NIfTI"),
    "flat": (65, "must be a 3D volume"),
    "fourd": (65, "is 4D with 3 volumes; a T1w must be one volume"),
    "zero": (65, "has no finite non-zero voxel"),
    "nan": (65, "has no finite non-zero voxel"),
    "sheared": (65, "has a sheared affine"),
    "singular": (65, "has a singular or non-finite affine"),
    "coarse": (65, "has 10 x 10 x 10 mm voxels, outside 0.3-4.0 mm"),
    "fine": (65, "has 0.05 x 0.05 x 0.05 mm voxels, outside 0.3-4.0 mm"),
    "corrupt": (65, "of the voxels inside the image's data are NaN or Inf; re-export"),
    "dangling": (66, "which does not exist; fetch the file (datalad get"),
    "unreadable": (66, "(permission denied); give it read access"),
}


def _t1w(folder: Path, label: str) -> Path:
    path = folder / f"sub-{label}" / "anat" / f"sub-{label}_T1w.nii.gz"
    path.parent.mkdir(parents=True)
    return path


def _save(path: Path, data: np.ndarray, affine: np.ndarray = TWO_MM) -> None:
    image = nib.Nifti1Image(np.asarray(data, np.float32), None)
    image.header.set_sform(affine, code=1)
    nib.save(image, path)


def _brain(rng: np.random.Generator) -> np.ndarray:
    """Brain-sized noise: an ellipsoid of Gaussian intensities, nothing like a brain."""
    z, y, x = np.ogrid[:SHAPE[0], :SHAPE[1], :SHAPE[2]]
    inside = ((z - 30) / 27) ** 2 + ((y - 35) / 32) ** 2 + ((x - 30) / 24) ** 2 < 1
    return np.where(inside, rng.normal(300, 100, SHAPE), 0)


def write_bad_t1w(bids: Path) -> None:
    """One participant per case of :data:`T1W_CASES`, plus ``noise`` (refused by the
    segmentation) and ``small`` (caught by the QC gate)."""
    rng = np.random.default_rng(3)
    good = np.ones(SHAPE)
    _save(_t1w(bids, "trunc"), good)
    path = bids / "sub-trunc/anat/sub-trunc_T1w.nii.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    _t1w(bids, "text").write_text("this is a text file, not a NIfTI image\n")
    header = nib.Nifti1Header()
    header.set_data_shape(SHAPE)
    header.set_data_dtype(np.float32)
    mismatch = _t1w(bids, "mismatch")  # the header promises 1 MB of data; 4 kB follow
    mismatch.write_bytes(gzip.compress(header.binaryblock + b"\0" * 4 + b"\1" * 4096))
    _save(_t1w(bids, "flat"), np.ones(SHAPE[:2]))
    _save(_t1w(bids, "fourd"), np.ones((*SHAPE, 3)))
    _save(_t1w(bids, "zero"), np.zeros(SHAPE))
    _save(_t1w(bids, "nan"), np.full(SHAPE, np.nan))
    sheared = TWO_MM.copy()
    sheared[0, 1] = 0.3
    _save(_t1w(bids, "sheared"), good, sheared)
    _save(_t1w(bids, "singular"), good, np.diag([2.0, 2.0, 0.0, 1.0]))
    _save(_t1w(bids, "coarse"), np.ones((20, 22, 20)), np.diag([10.0, 10.0, 10.0, 1.0]))
    _save(_t1w(bids, "fine"), np.ones((40, 40, 40)), np.diag([0.05, 0.05, 0.05, 1.0]))
    corrupt = _brain(rng) + 500
    corrupt[rng.random(SHAPE) < 0.02] = np.nan
    _save(_t1w(bids, "corrupt"), corrupt)
    _t1w(bids, "dangling").symlink_to(bids / "annex" / "objects" / "missing.nii.gz")
    _save(_t1w(bids, "unreadable"), good)
    (bids / "sub-unreadable/anat/sub-unreadable_T1w.nii.gz").chmod(0)
    _save(_t1w(bids, "noise"), _brain(rng))
    # the good participant with a header whose voxels are 0.6 times too small: it preprocesses
    # cleanly into a brain of 0.22 times the volume, which only the QC gate catches
    good_image = nib.load(bids / "sub-001" / "anat" / "sub-001_T1w.nii.gz")
    shrunk = good_image.affine.copy()
    shrunk[:3, :3] *= 0.6
    _save(_t1w(bids, "small"), np.asarray(good_image.dataobj), shrunk)


#: As root, the child runs without the capabilities that bypass file permissions (what makes
#: root read a mode-000 file): it meets permissions as any other user does.
UNPRIVILEGED = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]


def run_cli(args: list[str], unprivileged: bool = False) -> tuple[int, list[str]]:
    """Run bids_mdd in a child process (without permission-bypassing capabilities when root
    and ``unprivileged``); return its exit code and stderr's ``bids_mdd:`` lines."""
    prefix = UNPRIVILEGED if unprivileged and os.geteuid() == 0 else []
    done = subprocess.run([*prefix, sys.executable, "-m", "bids_mdd.cli.run", *args],
                          capture_output=True, text=True, timeout=1800)
    return done.returncode, [line for line in done.stderr.splitlines()
                             if line.startswith("bids_mdd:")]


@pytest.fixture(scope="module")
def corpus(templateflow_home) -> Iterator[dict]:
    """A dataset with one good SYNTHETIC participant and every bad T1w, run once at the
    participant level without permission-bypassing capabilities, as a user's cluster job
    would run."""
    root = Path(tempfile.mkdtemp(prefix="bids_mdd-corpus-"))
    try:
        bids = root / "bids"
        generate_cohort(bids, CohortSpec(n_mdd=1, n_hc=0, seed=21, resolution=4.0), n_jobs=1)
        write_bad_t1w(bids)
        before = checksums(bids)
        out = root / "out"
        out.mkdir()
        code, lines = run_cli([str(bids), str(out), "participant", "-w", str(out / ".work"),
                               "--skip-bids-validation", "--sloppy", "--nprocs", "2"],
                              unprivileged=True)
        yield {"root": root, "bids": bids, "out": out, "before": before, "code": code,
               "lines": lines}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_every_bad_t1w_is_named_once_and_the_good_one_completes(corpus) -> None:
    bids, out, lines = corpus["bids"], corpus["out"], corpus["lines"]
    assert corpus["code"] == 1, lines  # some failed: BIDS-Apps' general failure
    for label, (_, reason) in T1W_CASES.items():
        path = bids / f"sub-{label}" / "anat" / f"sub-{label}_T1w.nii.gz"
        mine = [line for line in lines if line.startswith(f"bids_mdd: failed: {path}: ")]
        assert len(mine) == 1 and reason in mine[0], (label, lines)
        assert not (out / f"sub-{label}").exists()  # no partial derivative
    noise = bids / "sub-noise" / "anat" / "sub-noise_T1w.nii.gz"
    refused = [line for line in lines if line.startswith(f"bids_mdd: failed: {noise}: ")]
    assert len(refused) == 1 and ("preprocessing failed in step segment: tissue classes without "
                                  "distinct T1w intensities") in refused[0], lines
    node_crash = Path(refused[0].split("; crash file: ")[1])  # nipype's, for the details
    assert node_crash.is_file() and "-segment-" in node_crash.name
    own = (out / "logs" / "crash-subject-noise.txt").read_text()  # the one the report links
    assert own.startswith(refused[0].removeprefix("bids_mdd: failed: ") + "\n\nNode: ")
    small = bids / "sub-small" / "anat" / "sub-small_T1w.nii.gz"
    gated = [line for line in lines if line.startswith(f"bids_mdd: QC failed: {small}: tiv_ml ")]
    assert len(gated) == 1 and "outside 800-2500" in gated[0], lines
    assert "QC gate failed (tiv_ml " in (out / "sub-small.html").read_text()
    assert len(lines) == len(T1W_CASES) + 2, lines
    assert (out / "sub-001" / "anat" / "sub-001_predictions.tsv").is_file()
    assert (out / "sub-001" / "anat" / "sub-001_predictions.json").is_file()
    assert (out / "sub-001.html").is_file()
    assert not [p for p in out.rglob(".bids_mdd-*") if ".work" not in p.parts]
    assert checksums(bids) == corpus["before"]  # the input, byte for byte, modes included


def in_process(capsys, args: list[str]) -> tuple[int, list[str]]:
    """Run bids_mdd in this process; its exit code and stderr's ``bids_mdd:`` lines."""
    capsys.readouterr()
    code = main(args)
    return code, [line for line in capsys.readouterr().err.splitlines()
                  if line.startswith("bids_mdd:")]


def _fresh_output(corpus: dict) -> Path:
    return Path(tempfile.mkdtemp(dir=corpus["root"]))


def test_qc_gate_alone(corpus) -> None:
    """Resumed from the corpus run's work folder, on its own: the shrunk participant exits 19
    with one line, and 0 with --qc-fail-ok (the same line)."""
    bids, out = corpus["bids"], corpus["out"]
    common = [str(bids), str(out), "participant", "-w", str(out / ".work"),
              "--skip-bids-validation", "--sloppy", "--nprocs", "2", "--participant-label"]
    small = bids / "sub-small" / "anat" / "sub-small_T1w.nii.gz"
    for extra, expected in (([], 19), (["--qc-fail-ok"], 0)):
        code, lines = run_cli([*common, "small", *extra], unprivileged=True)
        assert code == expected, lines
        assert len(lines) == 1 and lines[0].startswith(f"bids_mdd: QC failed: {small}: "), lines
        assert "the group level leaves it out" in lines[0]
    assert checksums(bids) == corpus["before"]


@pytest.mark.parametrize("label", sorted(T1W_CASES))
def test_each_bad_t1w_alone_exits_with_its_code(corpus, label, capsys) -> None:
    """Alone, each case fails before any work with its own code and line (unprivileged for
    the unreadable file: root reads anything)."""
    code_expected, reason = T1W_CASES[label]
    out = _fresh_output(corpus)
    args = [str(corpus["bids"]), str(out), "participant", "--participant-label", label,
            "--skip-bids-validation", "--preproc-only", "-w", str(out / ".work")]
    code, lines = (run_cli(args, unprivileged=True) if label == "unreadable"
                   else in_process(capsys, args))
    assert code == code_expected, lines
    assert len(lines) == 1 and reason in lines[0], lines
    assert str(corpus["bids"] / f"sub-{label}") in lines[0]
    assert not (out / f"sub-{label}").exists()
    assert checksums(corpus["bids"]) == corpus["before"]


# --- the dataset and the command line ----------------------------------------------------------

def test_dataset_level_mistakes(corpus, tmp_path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "dataset_description.json").write_text('{"Name": "e", "BIDSVersion": "1.10.0"}')
    nameless = tmp_path / "nameless"
    shutil.copytree(corpus["bids"] / "sub-001", nameless / "sub-001")
    cases = [
        ([str(empty)], 16, f"{empty} has no sub-*/[ses-*/]anat/*_T1w.nii[.gz]"),
        ([str(nameless)], 16, f"{nameless / 'dataset_description.json'} is missing"),
        ([str(corpus["bids"]), "--skip-bids-validation", "--participant-label", "999"], 18,
         "participant label(s) not found"),
        ([str(corpus["bids"]), "--skip-bids-validation", "--participant-label",
          "../../etc"], 18, "--participant-label '../../etc' gives the label '../../etc', "
                            "which is not a BIDS label"),
    ]
    for args, expected, message in cases:
        out = tmp_path / f"out{expected}{len(message)}"
        code, lines = in_process(capsys, [args[0], str(out), "participant", *args[1:],
                                          "--preproc-only", "-w", str(tmp_path / "work")])
        assert code == expected and len(lines) == 1 and message in lines[0], (args, lines)
        assert not list(out.rglob("sub-*"))
    assert checksums(corpus["bids"]) == corpus["before"]
    assert not (tmp_path / "etc").exists()


def _mount_tmpfs(target: Path, options: str) -> bool:
    target.mkdir()
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)],
                          capture_output=True).returncode == 0


def test_output_folder_not_writable_read_only_or_full(corpus, capsys) -> None:
    bids = str(corpus["bids"])
    common = ["participant", "--participant-label", "001", "--skip-bids-validation",
              "--preproc-only"]
    locked = Path(tempfile.mkdtemp(dir=corpus["root"]))
    locked.chmod(0o555)
    code, lines = run_cli([bids, str(locked / "out"), *common, "-w",
                           str(corpus["root"] / "w")], unprivileged=True)
    assert code == 73 and len(lines) == 1, lines
    assert "is not writable by uid" in lines[0] and "(permission denied)" in lines[0], lines
    if os.geteuid() != 0:
        pytest.skip("read-only and full file systems need tmpfs mounts (root)")
    read_only, full = corpus["root"] / "ro", corpus["root"] / "full"
    if not (_mount_tmpfs(read_only, "ro,size=1m") and _mount_tmpfs(full, "size=1m")):
        pytest.skip("tmpfs cannot be mounted here")
    try:
        code, lines = in_process(capsys, [bids, str(read_only), *common, "-w",
                                          str(corpus["root"] / "w")])
        assert code == 73 and lines == [
            f"bids_mdd: error: output_dir {read_only} is on a read-only file system: choose a "
            "writable folder (in a container, bind it without :ro)"]
        code, lines = in_process(capsys, [bids, str(full), *common, "-w",
                                          str(corpus["root"] / "w")])
        assert code == 73 and len(lines) == 1, lines
        assert f"output_dir {full} has only 1 MB free" in lines[0], lines
        assert not any(full.iterdir())
    finally:
        subprocess.run(["umount", str(read_only)], check=False)
        subprocess.run(["umount", str(full)], check=False)
    assert checksums(corpus["bids"]) == corpus["before"]


# --- model bundles -----------------------------------------------------------------------------

def _altered(bundle: Path) -> None:
    weights = bundle / "fold-1.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))


def _other_spec(bundle: Path) -> None:
    meta = json.loads((bundle / "model.json").read_text())
    meta["input"]["entities"]["desc"] = "unknown"
    (bundle / "model.json").write_text(json.dumps(meta))


def _oversized(bundle: Path) -> None:
    meta = json.loads((bundle / "model.json").read_text())
    (bundle / "model.json").write_text(json.dumps({**meta, "notes": "x" * (3 << 20)}))


def _pickled(bundle: Path) -> None:
    import torch

    torch.save({"weight": CreatesFile(str(bundle.parent / "pwned"))},
               bundle / "fold-1.safetensors")
    relist_weights(bundle)


def _other_architecture(bundle: Path) -> None:
    from safetensors.torch import save_file

    from bids_mdd.models.networks import build_network

    save_file(build_network("densenet121", init_features=8, growth_rate=4,
                            block_config=[1, 1, 1, 1]).state_dict(),
              str(bundle / "fold-1.safetensors"))
    relist_weights(bundle)


@pytest.mark.parametrize(("spoil", "message"), [
    (_altered, r"fold-1.safetensors: sha256 .* differs from .* in model.json: the file was "
               r"changed or corrupted"),
    (_other_spec, r"model.json: the model reads '.*desc-unknown.*', which bids_mdd's "
                  r"preprocessing does not write"),
    (_oversized, r"model.json: \d+ bytes, larger than any model.json"),
    (_pickled, r"fold-1.safetensors: not a safetensors file \(.*\); export the weights"),
    (_other_architecture, r"fold-1.safetensors: weights do not fit architecture "
                          r"'densenet121'"),
])
def test_bad_model_bundles_exit_65_before_any_work(corpus, tmp_path, capsys, spoil,
                                                   message) -> None:
    import re

    bundle = tmp_path / "models" / "classifier"
    shutil.copytree(packaged_models_dir("demo") / "demo-synthetic-densenet121", bundle)
    spoil(bundle)
    out = tmp_path / "out"
    code, lines = in_process(capsys, [str(corpus["bids"]), str(out), "participant",
                                      "--participant-label", "001", "--skip-bids-validation",
                                      "-w", str(tmp_path / "work"), "--models", str(bundle)])
    assert code == 65 and len(lines) == 1, lines
    assert re.search(message, lines[0]) and str(bundle) in lines[0], lines
    assert not (tmp_path / "models" / "pwned").exists()  # the pickle never ran
    assert not list(out.rglob("sub-*")) and not (tmp_path / "work" / "bids_mdd_wf").exists()
    assert checksums(corpus["bids"]) == corpus["before"]


# --- participants.tsv --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mni_cohort(tmp_path_factory) -> dict:
    """SYNTHETIC GM maps in MNI space for 6 participants, as the participant level writes
    them (the group level reads nothing else)."""
    root = tmp_path_factory.mktemp("participants_tsv")
    bids = root / "bids"
    generate_cohort(bids, CohortSpec(n_mdd=3, n_hc=3, seed=4, resolution=4.0,
                                     skull_stripped=True, mni_derivatives=True, mni_t1w=False),
                    n_jobs=1)
    return {"root": root, "bids": bids}


@pytest.mark.parametrize(("edit", "message"), [
    (lambda rows: rows + [rows[1]], r"participants.tsv lines 2, 8: participant_id sub-001 "
                                    r"appears 2 times; keep one row per participant"),
    (lambda rows: rows[:3] + ["\t".join(rows[3].split("\t")[:2])] + rows[4:],
     r"participants.tsv line 4: 2 tab-separated field\(s\), the header has \d+; fix the row"),
    (lambda rows: rows[:2] + [rows[2].replace(rows[2].split("\t")[2], "fifty-nine")] + rows[3:],
     r"participants.tsv line 3: column 'age' holds numbers, but 'fifty-nine' is not one; "
     r"write a number or n/a"),
    (lambda rows: [rows[0] + "\tgroup"] + [row + "\tHC" for row in rows[1:]],
     r"participants.tsv line 1: the header names a column more than once \('group' is fields "
     r"\d, \d+\); keep one column per name"),
])
def test_broken_participants_tsv_exits_65_naming_line_and_column(mni_cohort, tmp_path, capsys,
                                                                 edit, message) -> None:
    import re

    bids = tmp_path / "bids"
    shutil.copytree(mni_cohort["bids"], bids, symlinks=True)
    table = bids / "participants.tsv"
    rows = table.read_text().splitlines()
    assert rows[0].split("\t")[2] == "age"
    table.write_text("\n".join(edit(rows)) + "\n")
    before = checksums(bids)
    out = tmp_path / "out"
    shutil.copytree(bids / MNI_DIR, out)
    (out / "dataset_description.json").unlink()
    code, lines = in_process(capsys, [str(bids), str(out), "group", "--skip-bids-validation"])
    assert code == 65 and len(lines) == 1 and re.search(message, lines[0]), lines
    assert str(table) in lines[0]
    assert not (out / "group").exists()
    assert checksums(bids) == before


def test_group_leaves_out_qc_failures_unless_told(mni_cohort, tmp_path, caplog) -> None:
    """A participant whose QC metrics fail the gate is left out of the GLM (one warning line)
    and listed in the report; --include-qc-failures keeps it."""
    from bids_mdd.bids.names import derivative_path
    from bids_mdd.bids.outputs import OUTPUTS

    out = tmp_path / "out"
    shutil.copytree(mni_cohort["bids"] / MNI_DIR, out)
    (out / "dataset_description.json").unlink()
    qc = derivative_path(out, subject="002", **OUTPUTS["qc"])
    metrics = json.loads(qc.read_text())
    qc.write_text(json.dumps({**metrics, "template_ncc": 0.21, "template_mask_dice": 0.62}))
    args = [str(mni_cohort["bids"]), str(out), "group", "--skip-bids-validation",
            "--covariates"]
    assert main(args) == 0
    assert ("1 participant(s) failed the QC gate and are left out (--include-qc-failures keeps "
            "them): sub-002 (template_ncc 0.21 outside 0.5-1, template_mask_dice 0.62 outside "
            "0.85-1)") in [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    statmap = derivative_path(out, space="MNI152NLin2009cAsym", res="1p5", contrast="MDDvsHC",
                              stat="t", suffix="statmap")
    assert json.loads(statmap.with_name(statmap.name.replace(".nii.gz", ".json")).read_text())[
        "Parameters"]["Participants"] == 5
    html = (out / "group" / "group.html").read_text()
    assert "1 participant(s) failed the QC gate" in html and "sub-002" in html
    assert main([*args, "--include-qc-failures"]) == 0
    assert json.loads(statmap.with_name(statmap.name.replace(".nii.gz", ".json")).read_text())[
        "Parameters"]["Participants"] == 6
    assert "kept, as --include-qc-failures asks" in (out / "group" / "group.html").read_text()
