"""bids_mdd-train end to end on derivative-shaped inputs written here (a planted GM effect on
the real 1.5 mm grid, trained on a reduced grid with tiny networks)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bids_mdd.bids.names import derivative_path
from bids_mdd.cli.train import main as train_main
from bids_mdd.models.bundle import load_bundle
from bids_mdd.models.card import ModelCard, caution
from bids_mdd.models.inputs import GM_INPUT
from bids_mdd.training.loop import TrainConfig, param_groups, train_network
from toy_cohort import write_cohort

TINY = ["--zoom", "0.25", "--width", "4", "--growth-rate", "4", "--batch-size", "4",
        "--lr", "0.001", "--no-progress"]
FAST = ["--architecture", "resnet10"]  # fewer layers than a DenseNet: quicker tests


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    return write_cohort(root, [f"{i:02d}" for i in range(1, 25)], 12, 12, seed=0)


def _run(cohort: Path, models: Path, *extra: str) -> int:
    return train_main([str(cohort / "derivatives"), str(models), "--participants",
                       str(cohort / "participants.tsv"), *TINY, *extra])


def test_classifier_learns_the_planted_effect_and_writes_a_bundle(cohort, tmp_path):
    rc = _run(cohort, tmp_path / "models", "--folds", "3", "--epochs", "8",
              "--permutations", "200", "--seed", "1")
    assert rc == 0
    bundle = load_bundle(tmp_path / "models" / "densenet121-classifier")
    meta = bundle.meta
    cv = meta["metrics"]["cross_validation"]
    assert cv["accuracy"]["mean"] >= 0.85 and cv["auc"]["mean"] >= 0.9
    assert cv["accuracy"]["n_folds"] == 3 and cv["accuracy"]["sd"] >= 0
    assert meta["metrics"]["permutation"]["p_value"] < 0.01
    by_metric = meta["metrics"]["permutation"]["by_metric"]
    assert set(by_metric) == {"accuracy", "balanced_accuracy", "auc"}
    assert by_metric["accuracy"]["p_value"] == meta["metrics"]["permutation"]["p_value"]
    assert by_metric["balanced_accuracy"]["p_value"] < 0.01  # 1 / 201 at most from 200
    assert bundle.card.evidence.permutation_p == by_metric["balanced_accuracy"]["p_value"]
    assert bundle.card.evidence.n_permutations == 200
    assert bundle.domain_model().threshold == meta["domain"]["threshold"] > 0
    assert meta["synthetic"] is True
    assert meta["intended_use"] == "synthetic data, not for clinical use"
    assert meta["input"]["shape"] == [30, 36, 30] and meta["input"]["zoom"] == 0.25
    assert meta["input"]["normalization"] == "zscore"
    assert meta["kwargs"] == {"out_channels": 2, "init_features": 4, "growth_rate": 4}
    assert meta["training"]["class_counts"] == {"control": 12, "MDD": 12}
    assert len(meta["data_fingerprint"]["participants_sha256"]) == 24
    assert bundle.n_folds == 3
    predictions = pd.read_csv(bundle.path / "cv_predictions.tsv", sep="\t")
    assert sorted(predictions["participant_id"]) == [f"sub-{i:02d}" for i in range(1, 25)]
    assert set(predictions["fold"]) == {1, 2, 3}


def test_null_labels_stay_at_chance(cohort, tmp_path):
    table = pd.read_csv(cohort / "participants.tsv", sep="\t")
    table["group"] = np.random.default_rng(5).permutation(table["group"].to_numpy())
    shuffled = tmp_path / "participants.tsv"
    table.to_csv(shuffled, sep="\t", index=False)
    rc = train_main([str(cohort / "derivatives"), str(tmp_path / "m"), "--participants",
                     str(shuffled), *TINY, *FAST, "--folds", "3", "--epochs", "8",
                     "--permutations", "200", "--seed", "1"])
    assert rc == 0
    meta = load_bundle(tmp_path / "m" / "resnet10-classifier").meta
    assert 0.25 <= meta["metrics"]["cross_validation"]["accuracy"]["mean"] <= 0.75
    assert meta["metrics"]["permutation"]["p_value"] > 0.05
    assert meta["metrics"]["permutation"]["by_metric"]["balanced_accuracy"]["p_value"] > 0.05
    assert "not distinguishable from chance" in caution("resnet10-classifier",
                                                        ModelCard.from_json(meta["card"]))


def test_same_seed_same_predictions_and_work_dir_reuse(cohort, tmp_path):
    args = ["--folds", "2", "--epochs", "2", "--seed", "4", "--val-fraction", "0.2", *FAST]
    assert _run(cohort, tmp_path / "a", *args, "-w", str(tmp_path / "work")) == 0
    assert _run(cohort, tmp_path / "b", *args) == 0
    first = (tmp_path / "a/resnet10-classifier/cv_predictions.tsv").read_text()
    assert first == (tmp_path / "b/resnet10-classifier/cv_predictions.tsv").read_text()
    finished = sorted(p.name for p in (tmp_path / "work").glob("*/*.safetensors"))
    assert finished == ["repeat-1_fold-1.safetensors", "repeat-1_fold-2.safetensors"]
    assert not list((tmp_path / "work").glob("*/*.checkpoint.pt"))
    assert _run(cohort, tmp_path / "a", *args, "-w", str(tmp_path / "work"), "--overwrite") == 0
    assert (tmp_path / "a/resnet10-classifier/cv_predictions.tsv").read_text() == first


def test_resume_from_a_checkpoint_equals_an_uninterrupted_run(tmp_path):
    torch.use_deterministic_algorithms(True, warn_only=True)
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(12, 32, 40, 32)).astype(np.float32)
    targets = np.arange(12) % 2
    train, val = np.arange(8), np.arange(8, 12)
    from bids_mdd.models.networks import build_network

    def run(epochs: int, checkpoint: Path | None) -> dict:
        torch.manual_seed(0)
        net = build_network("densenet121", init_features=4, growth_rate=4,
                            block_config=(1, 1, 1, 1))
        config = TrainConfig(epochs=epochs, batch_size=4, lr=1e-3, progress=False)
        return train_network(net, inputs, targets, train, val, "classification", config,
                             checkpoint=checkpoint)

    straight = run(4, None)
    checkpoint = tmp_path / "fold.checkpoint.pt"
    run(2, checkpoint)  # "killed" after epoch 2
    resumed = run(4, checkpoint)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    assert resumed.history == straight.history
    assert resumed.best_epoch == straight.best_epoch
    assert all(torch.equal(resumed.state[k], straight.state[k]) for k in straight.state)


def test_regression_and_ridge_baseline(cohort, tmp_path):
    rc = _run(cohort, tmp_path / "models", "--task", "regression", "--targets", "Score",
              "--input", "gm", "--folds", "3", "--repeats", "2", "--epochs", "10",
              "--compare", "--seed", "0")
    # the cohort's Score is 2 x (GM shift of a block) + noise; ridge sees it in region volumes
    assert rc == 0
    bundle = load_bundle(tmp_path / "models" / "dfrn-Score")
    assert bundle.meta["task"] == "regression" and bundle.outputs == ["Score"]
    assert bundle.n_folds == 3  # the ensemble is repeat 1; metrics use both repeats
    pearson = bundle.meta["metrics"]["cross_validation"]["pearson_r"]
    assert pearson["n_folds"] == 6
    assert pearson["mean"] >= 0.6  # measured 0.76 ± 0.17: the DFRN finds the tied block
    assert {"mean", "sd"} <= set(bundle.meta["folds"][0]["target_scaling"])
    table = pd.read_csv(bundle.path / "comparison.tsv", sep="\t")
    assert list(table["method"]) == ["3D dfrn", "Ridge on AAL2 regional GM volumes"]
    ridge_r = float(table["pearson_r"][1].split(" ± ")[0])
    assert ridge_r >= 0.85  # measured 0.92: region volumes carry the block's GM
    assert "SYNTHETIC DATA" in (bundle.path / "comparison.md").read_text()


def test_transfer_guard_and_head_learning_rate(cohort, tmp_path):
    assert _run(cohort, tmp_path / "src", "--folds", "2", "--epochs", "1", *FAST) == 0
    source = tmp_path / "src" / "resnet10-classifier"
    rc = _run(cohort, tmp_path / "dst", "--folds", "2", "--epochs", "1",
              "--pretrain-from", str(source), "--allow-shared-ids")
    assert rc == 64  # the same images: refused even with --allow-shared-ids
    other = write_cohort(tmp_path / "other", [f"{i:02d}" for i in range(1, 13)], 6, 6, seed=9)
    assert _run(other, tmp_path / "dst", "--folds", "2", "--epochs", "1",
                "--pretrain-from", str(source)) == 64  # shared labels 01..12
    fresh = write_cohort(tmp_path / "fresh", [f"b{i:02d}" for i in range(1, 13)], 6, 6, seed=9)
    assert _run(fresh, tmp_path / "dst", "--folds", "2", "--epochs", "1",
                "--pretrain-from", str(source)) == 0
    meta = load_bundle(tmp_path / "dst" / "resnet10-classifier").meta
    assert meta["training"]["pretrained_from"]["name"] == "resnet10-classifier"
    assert meta["training"]["config"]["backbone_lr_factor"] == 0.001
    from bids_mdd.models.networks import build_network

    net = build_network("densenet121", init_features=4, growth_rate=4)
    groups = param_groups(net, "class_layers.out", TrainConfig(lr=0.01, backbone_lr_factor=0.001))
    assert [g["lr"] for g in groups] == [0.01, pytest.approx(1e-5)]
    assert len(groups[0]["params"]) == 2  # the new head's weight and bias


@pytest.mark.parametrize("change, code, message", [
    ("no-derivatives", 18, "no .*_space-MNI152NLin2009cAsym_res-1p5_label-GM_"
                           "desc-smooth8modulated_probseg.nii.gz derivatives"),
    ("no-participants", 66, "participants.tsv not found"),
    ("unknown-codes", 64, "no value of column 'group' is a known positive or negative code"),
    ("too-many-folds", 64, "only 24 independent groups"),
    ("leave-site-out-without-sites", 64, "--cv leave-site-out: .* has no site column 'site'"),
    ("harmonize-without-sites", 64, "--harmonize: .* has no site column 'site'"),
    ("pooling-without-harmonize", 64, "--harmonize-empirical-bayes changes how --harmonize "
                                      "fits ComBat: give --harmonize too"),
])
def test_errors_are_one_line_with_exit_codes(cohort, tmp_path, capsys, change, code, message):
    derivatives, participants = cohort / "derivatives", cohort / "participants.tsv"
    extra: list[str] = []
    if change == "no-derivatives":
        derivatives = tmp_path
    elif change == "no-participants":
        participants = tmp_path / "participants.tsv"
    elif change == "unknown-codes":
        table = pd.read_csv(participants, sep="\t")
        table["group"] = table["group"].map({"MDD": "A", "HC": "B"})
        participants = tmp_path / "p.tsv"
        table.to_csv(participants, sep="\t", index=False)
    elif change == "too-many-folds":
        extra = ["--folds", "30"]
    elif change == "harmonize-without-sites":
        extra = ["--harmonize"]
    elif change == "pooling-without-harmonize":
        extra = ["--harmonize-empirical-bayes"]
    else:
        extra = ["--cv", "leave-site-out"]
    rc = train_main([str(derivatives), str(tmp_path / "m"), "--participants", str(participants),
                     *TINY, *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == code
    assert len(err) == 1 and err[0].startswith("bids_mdd-train: error: ")
    import re
    assert re.search(message, err[0])


def test_baselines_of_a_t1w_model_read_the_same_participants_gm(cohort):
    from dataclasses import replace as with_changes

    from bids_mdd.errors import BidsMddError
    from bids_mdd.training.data import Sample, load_volumes
    from bids_mdd.training.run import _gm_volumes

    gm_spec = with_changes(GM_INPUT, zoom=0.25, normalization="none")
    t1w_samples = [Sample("07", None, Path("t1w-7")), Sample("02", None, Path("t1w-2"))]
    gm = _gm_volumes(cohort / "derivatives", t1w_samples, gm_spec, progress=False)
    direct, _ = load_volumes([Sample(p, None, derivative_path(cohort / "derivatives",
                                                              subject=p, **GM_INPUT.entities))
                              for p in ("07", "02")], gm_spec, progress=False)
    assert gm.shape == (2, 30, 36, 30) and np.array_equal(gm, direct)
    with pytest.raises(BidsMddError, match="no GM map for sub-99") as error:
        _gm_volumes(cohort / "derivatives", [Sample("99", None, Path("x"))], gm_spec, False)
    assert error.value.exit_code == 18


def test_leave_site_out_folds_are_the_sites_harmonised_inside(cohort, tmp_path):
    table = pd.read_csv(cohort / "participants.tsv", sep="\t")
    table["site"] = np.tile(["north", "south", "east"], len(table) // 3)
    participants = tmp_path / "participants.tsv"
    table.to_csv(participants, sep="\t", index=False)
    rc = train_main([str(cohort / "derivatives"), str(tmp_path / "models"), "--participants",
                     str(participants), *TINY, *FAST, "--cv", "leave-site-out", "--epochs", "2",
                     "--harmonize", "--compare", "--permutations", "1", "--permutation-mode",
                     "retrain"])
    assert rc == 0
    bundle = load_bundle(tmp_path / "models" / "resnet10-classifier")
    permutation = bundle.meta["metrics"]["permutation"]
    assert (permutation["mode"], permutation["n_permutations"]) == ("retrain", 1)
    assert permutation["within"] == "folds and sites"  # each site's diagnosis mix kept
    comparison = (bundle.path / "comparison.md").read_text()
    assert "Every method's inputs ComBat-harmonised over the site column" in comparison
    assert len(pd.read_csv(bundle.path / "comparison.tsv", sep="\t")) == 5  # network + 4
    assert bundle.meta["training"]["cv"] == "leave-site-out"
    assert bundle.meta["training"]["harmonization"].startswith(
        "ComBat (each voxel's own site estimates) of the inputs over the site column alone, "
        "fitted on each fold's training part")
    assert any("sites east, north, south: a scan of another site" in limit
               for limit in bundle.meta["card"]["known_limits"])
    assert bundle.n_folds == 3  # one fold model per left-out site
    predictions = pd.read_csv(bundle.path / "cv_predictions.tsv", sep="\t")
    site_of = dict(zip(table["participant_id"], table["site"]))
    tested = predictions.groupby("fold")["participant_id"].agg(lambda p: {site_of[x] for x in p})
    assert sorted(min(sites) for sites in tested) == ["east", "north", "south"]
    assert all(len(sites) == 1 for sites in tested)
    check_bundle_harmonises_new_scans(bundle, cohort, table, tmp_path)


def check_bundle_harmonises_new_scans(bundle, cohort: Path, table: pd.DataFrame,
                                      tmp_path: Path) -> None:
    """The bundle's ComBat fit is the one of all its participants, and the participant level
    feeds the networks exactly that fit's harmonised input for a known site, and the raw input,
    flagged, for an unknown one or none."""
    from bids_mdd.bids.outputs import T1wOutputs
    from bids_mdd.bids.participants import read_participants
    from bids_mdd.harmonize import fit_combat
    from bids_mdd.models.inference import apply_model_batch, load_models, model_input
    from bids_mdd.models.inputs import prepare
    from bids_mdd.participant.predictions import SourceDataset, predict_participant
    from bids_mdd.training.data import find_samples, load_volumes

    assert bundle.meta["harmonization"]["sites"] == ["east", "north", "south"]
    assert bundle.meta["harmonization"]["site_column"] == "site"
    [model] = load_models([bundle.path], "cpu")
    fit = model.harmonization.fit
    samples = find_samples(cohort / "derivatives", model.spec)
    volumes, _ = load_volumes(samples, model.spec, progress=False)
    rows_of = table.set_index(table["participant_id"].str.removeprefix("sub-"))
    sites = [rows_of.at[s.participant, "site"] for s in samples]
    again, _ = fit_combat(volumes.reshape(len(volumes), -1), sites, empirical_bayes=False)
    np.testing.assert_allclose(fit.gamma_star, again.gamma_star, rtol=1e-5, atol=1e-8)

    image = derivative_path(cohort / "derivatives", subject="07", **model.spec.entities)
    data = model_input(model, image)
    known, unknown, none = apply_model_batch(model, [data] * 3, [image] * 3, attention=False,
                                             sites=["north", "west", None])
    harmonised = fit.apply(prepare(data, model.spec).reshape(1, -1), ["north"])
    x = torch.from_numpy(harmonised.reshape(1, 1, *model.spec.shape).astype(np.float32))
    with torch.inference_mode():
        expected = np.mean([torch.softmax(net(x), 1)[0, 1].item() for net in model.nets])
    assert known.value == pytest.approx(expected, abs=1e-5)
    assert (known.site.status, unknown.site.status, none.site.status) == (
        "harmonized", "unknown site", "no site")
    assert unknown.value == pytest.approx(none.value, abs=1e-6)
    assert abs(known.value - none.value) > 1e-4  # ComBat moved this participant's input

    participants = read_participants(cohort / "participants.tsv").assign(site="west")
    participants.loc["07", "site"] = "north"
    rows = {}
    for subject in ("07", "08"):
        out = tmp_path / "out"
        target = derivative_path(out, subject=subject, **model.spec.entities)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(derivative_path(cohort / "derivatives", subject=subject,
                                           **model.spec.entities).read_bytes())
        table_path = predict_participant(T1wOutputs(out, {"subject": subject}), [model], "cpu",
                                         attention=True, dataset=SourceDataset(None,
                                                                               participants))
        rows[subject] = pd.read_csv(table_path, sep="\t", dtype=str).iloc[0]
        sidecar = json.loads(table_path.with_suffix(".json").read_text())
        assert ("not harmonised for resnet10-classifier (site west)" in
                sidecar.get("Warning", "")) == (subject == "08")
        assert sidecar["Fingerprint"]["Harmonization"][0]["site"] == participants.at[subject,
                                                                                    "site"]
    assert (rows["07"]["site"], rows["07"]["harmonized"]) == ("north", "true")
    assert (rows["08"]["site"], rows["08"]["harmonized"]) == ("west", "false")

    from bids_mdd.errors import BidsMddError
    from bids_mdd.participant.runner import source_dataset

    (tmp_path / "bids").mkdir()
    (tmp_path / "bids" / "participants.tsv").write_text(
        "participant_id\tsite\nsub-07\tsouth\nsub-08\tn/a\n")
    dataset = source_dataset(tmp_path / "bids", [model])
    assert [dataset.site(s, model) for s in ("07", "08", "09")] == ["south", None, None]
    (tmp_path / "bare").mkdir()
    assert source_dataset(tmp_path / "bare", [model]).participants is None  # no table

    fit_file = bundle.path / "harmonization.safetensors"
    tampered = bytearray(fit_file.read_bytes())
    tampered[-1] ^= 0xFF
    fit_file.write_bytes(bytes(tampered))
    with pytest.raises(BidsMddError, match="harmonization.safetensors: sha256 .* differs"):
        load_bundle(bundle.path)
