"""Prepared inputs (``bids_mdd-train prepare``): what they hold is what the participant level
feeds the network, training on them keeps the full-grid fingerprint, and a wrong one is refused
naming the file. SYNTHETIC toy derivatives, plus the real ds002748 folder in ../shared."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from bids_mdd.bids.names import derivative_path
from bids_mdd.cli.train import main as train_main
from bids_mdd.errors import BidsMddError
from bids_mdd.models.bundle import load_bundle
from bids_mdd.models.inputs import GM_INPUT, T1W_INPUT, normalize, read_on_grid, zoom_tensor
from bids_mdd.spaces.grids import DFRN_GRID
from bids_mdd.training.data import find_samples, load_volumes
from conftest import SHARED, _need
from toy_cohort import write_cohort

PREPARED_72 = SHARED / "data" / "ds002748-inputs"
TRAIN = ["--zoom", "0.25", "--architecture", "resnet10", "--width", "4", "--batch-size", "4",
         "--lr", "0.001", "--folds", "3", "--epochs", "2", "--no-progress", "--seed", "3"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """24 toy GM maps and, for four of them, a T1w-shaped map on the 1 mm grid."""
    root = write_cohort(tmp_path_factory.mktemp("cohort"), [f"{i:02d}" for i in range(1, 25)],
                        12, 12, seed=4)
    rng = np.random.default_rng(0)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in DFRN_GRID.shape], indexing="ij")
    head = (x**2 + y**2 + z**2) < 0.7
    for label in ("01", "02", "03", "04"):
        t1w = head * (300 + 40 * rng.standard_normal(DFRN_GRID.shape))
        path = derivative_path(root / "derivatives", subject=label, **T1W_INPUT.entities)
        nib.save(DFRN_GRID.image(t1w.astype(np.float32)), path)
    return root


@pytest.fixture(scope="module")
def prepared(cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared") / "inputs"
    assert train_main(["prepare", str(cohort / "derivatives"), str(out), "--zoom", "0.25",
                       "--no-progress"]) == 0
    return out


def _participant_level_input(path: Path, spec) -> np.ndarray:
    """What inference feeds the network: normalised on the full grid, then zoomed as a tensor
    (``apply_model_batch``), not through the training package's ``prepare``."""
    data = read_on_grid(path, spec)
    tensor = torch.from_numpy(normalize(data, spec)[None, None])
    return zoom_tensor(tensor, spec.zoom)[0, 0].numpy()


@pytest.mark.parametrize("base, normalization", [(GM_INPUT, "zscore"), (GM_INPUT, "none"),
                                                 (T1W_INPUT, "zscore")])
def test_prepared_image_is_what_the_participant_level_feeds_the_network(cohort, prepared, base,
                                                                         normalization):
    spec = replace(base, zoom=0.25, normalization=normalization)
    samples = find_samples(prepared, spec)
    assert len(samples) == (24 if base is GM_INPUT else 4)
    volumes, hashes = load_volumes(samples, spec, progress=False)
    for sample, volume, digest in zip(samples, volumes, hashes):
        derivative = derivative_path(cohort / "derivatives", subject=sample.participant,
                                     **base.entities)
        expected = _participant_level_input(derivative, spec)
        assert volume.shape == spec.shape == expected.shape
        peak = float(np.abs(expected).max())
        assert np.abs(volume - expected).max() <= 1e-4 * peak
        assert np.abs(volume - expected).max() > 0  # int16 storage: really read back
        full_grid = read_on_grid(derivative, spec)
        assert digest == hashlib.sha256(full_grid.tobytes()).hexdigest()
        image = nib.load(str(sample.path))
        assert image.get_data_dtype() == np.int16
        assert int(image.header["qform_code"]) == int(image.header["sform_code"]) == 4
        assert np.allclose(image.affine, spec.affine)
    index = json.loads((prepared / "inputs.json").read_text())
    assert set(index) == {"gm-zscore", "gm-none", "t1w-zscore"}
    assert index["t1w-zscore"]["shape"] == [45, 54, 45]
    assert np.allclose(index["gm-zscore"]["affine"], replace(GM_INPUT, zoom=0.25).affine)


def test_training_on_prepared_inputs_keeps_the_full_grid_fingerprint(cohort, prepared,
                                                                      tmp_path):
    common = ["--participants", str(cohort / "participants.tsv"), *TRAIN]
    assert train_main([str(cohort / "derivatives"), str(tmp_path / "direct"), *common]) == 0
    assert train_main([str(prepared), str(tmp_path / "prepared"), *common]) == 0
    direct = load_bundle(tmp_path / "direct" / "resnet10-classifier").meta
    from_prepared = load_bundle(tmp_path / "prepared" / "resnet10-classifier").meta
    assert from_prepared["data_fingerprint"] == direct["data_fingerprint"]
    assert len(from_prepared["data_fingerprint"]["images_sha256"]) == 24
    assert from_prepared["input"] == direct["input"]
    assert from_prepared["synthetic"] is True  # the derivatives' description travels along
    assert from_prepared["card"]["preprocessing"].endswith("prepared inputs")
    # same folds, same seed, inputs equal to 2e-5 of their peak: the same predictions, nearly
    a = pd.read_csv(tmp_path / "direct" / "resnet10-classifier" / "cv_predictions.tsv", sep="\t")
    b = pd.read_csv(tmp_path / "prepared" / "resnet10-classifier" / "cv_predictions.tsv",
                    sep="\t")
    assert a["participant_id"].tolist() == b["participant_id"].tolist()
    assert np.abs(a["score"] - b["score"]).max() < 0.05


def test_a_prepared_image_off_the_grid_is_refused_naming_it(cohort, prepared, tmp_path,
                                                            capsys):
    broken = tmp_path / "inputs"
    shutil.copytree(prepared, broken)
    victim = broken / "sub-05" / "sub-05_gm-zscore.nii.gz"
    image = nib.load(str(victim))
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj)[:, :, :29], image.affine), victim)
    rc = train_main([str(broken), str(tmp_path / "m"), "--participants",
                     str(cohort / "participants.tsv"), *TRAIN])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 65 and len(err) == 1
    assert str(victim) in err[0] and "(30, 36, 30)" in err[0]
    (broken / "images.tsv").unlink()
    rc = train_main([str(broken), str(tmp_path / "m"), "--participants",
                     str(cohort / "participants.tsv"), *TRAIN])
    err = capsys.readouterr().err.strip()
    assert rc == 65 and f"{broken / 'images.tsv'}: missing" in err
    rc = train_main([str(prepared), str(tmp_path / "m"), "--participants",
                     str(cohort / "participants.tsv"), *TRAIN[2:]])  # zoom 1: not prepared
    err = capsys.readouterr().err.strip()
    assert rc == 18 and "no gm-zscore inputs at zoom 1.0" in err and "zoom 0.25" in err


def test_prepare_refuses_to_overwrite_or_to_read_its_own_output(cohort, prepared, tmp_path,
                                                                capsys):
    before = sorted(p.name for p in prepared.iterdir())
    assert train_main(["prepare", str(cohort / "derivatives"), str(prepared)]) == 64
    assert "not empty; give --overwrite" in capsys.readouterr().err
    assert sorted(p.name for p in prepared.iterdir()) == before
    assert train_main(["prepare", str(prepared), str(tmp_path / "again")]) == 64
    assert "already a folder of prepared inputs" in capsys.readouterr().err
    assert train_main(["prepare", str(cohort / "derivatives"),
                       str(cohort / "derivatives" / "inside")]) == 64
    with pytest.raises(SystemExit) as stop:
        train_main(["prepare", str(cohort / "derivatives"), str(tmp_path / "z"), "--zoom", "2"])
    assert stop.value.code == 64


def test_the_72_real_prepared_inputs_load_with_their_full_grid_hashes():
    folder = _need(PREPARED_72)
    table = pd.read_csv(folder / "images.tsv", sep="\t")
    for variant, base, normalization in (("gm-zscore", GM_INPUT, "zscore"),
                                         ("t1w-zscore", T1W_INPUT, "zscore")):
        spec = replace(base, zoom=0.25, normalization=normalization)
        samples = find_samples(folder, spec)
        assert len(samples) == 72
        volumes, hashes = load_volumes(samples, spec, progress=False)
        assert volumes.shape == (72, *spec.shape)
        inside = volumes[:, spec.shape[0] // 2] != 0
        assert inside.any(axis=(1, 2)).all()  # every map has a brain in its middle slice
        expected = table[table["variant"] == variant].set_index("participant_id")
        assert hashes == [expected.at[f"sub-{s.participant}", "source_sha256"] for s in samples]
    with pytest.raises(BidsMddError, match="no gm-zscore inputs at zoom 0.5") as error:
        find_samples(folder, replace(GM_INPUT, zoom=0.5))
    assert error.value.exit_code == 18
