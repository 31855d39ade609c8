"""Participant inference: bundles trained here on a toy cohort (SYNTHETIC), applied to held-out
toy subjects; predictions, attention maps, their sidecars, resume and the bundle checks."""

from __future__ import annotations

import copy
import json
import logging
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import pearsonr
from sklearn.metrics import roc_auc_score

from bids_mdd.bids.names import derivative_path, sidecar_path
from bids_mdd.bids.outputs import PREDICTIONS, T1wOutputs
from bids_mdd.cli.run import main as run_main
from bids_mdd.cli.train import main as train_main
from bids_mdd.errors import BidsMddError
from bids_mdd.models.attention import input_gradient
from bids_mdd.models.bundle import sha256_of
from bids_mdd.models.card import evidence_line
from bids_mdd.models.inference import (
    _for_inference,
    load_models,
    packaged_models_dir,
    resolve_models,
)
from bids_mdd.models.inputs import GM_INPUT, load_input
from bids_mdd.models.networks import build_network
from bids_mdd.participant.predictions import (
    ModelStepSettings,
    SourceDataset,
    predict_participant,
    predict_participants,
    up_to_date,
)
from bids_mdd.spaces.grids import CLASSIFIER_GRID
from toy_cohort import MDD_BLOCK, write_cohort

TINY = ["--zoom", "0.25", "--width", "4", "--growth-rate", "4", "--batch-size", "4",
        "--lr", "0.001", "--no-progress", "--folds", "3", "--repeats", "1"]
HELD_OUT = [f"h{i:02d}" for i in range(1, 17)]


@pytest.fixture(scope="module")
def applied(tmp_path_factory) -> dict:
    """Train a classifier and a Score regressor; apply both to 16 held-out subjects."""
    root = tmp_path_factory.mktemp("inference")
    train = write_cohort(root / "train", [f"{i:02d}" for i in range(1, 25)], 12, 12, seed=0)
    common = [str(train / "derivatives"), str(root / "models"), "--participants",
              str(train / "participants.tsv"), *TINY]
    assert train_main([*common, "--name", "toy-classifier", "--epochs", "8", "--seed", "1"]) == 0
    assert train_main([*common, "--task", "regression", "--targets", "Score", "--input", "gm",
                       "--name", "toy-dfrn", "--epochs", "10", "--seed", "0"]) == 0
    held_out = write_cohort(root / "held_out", HELD_OUT, 8, 8, seed=5)
    models = load_models([root / "models"], "cpu")
    output_dir = held_out / "derivatives"
    for label in HELD_OUT:
        predict_participant(T1wOutputs(output_dir, {"subject": label}), models, "cpu")
    truth = pd.read_csv(held_out / "participants.tsv", sep="\t")
    return {"root": root, "out": output_dir, "models": models, "truth": truth}


def _predictions(applied: dict) -> pd.DataFrame:
    tables = [pd.read_csv(derivative_path(applied["out"], subject=s, **PREDICTIONS), sep="\t")
              .assign(participant_id=f"sub-{s}") for s in HELD_OUT]
    return pd.concat(tables).merge(applied["truth"], on="participant_id")


def _attention(applied: dict, subject: str, target: str) -> np.ndarray:
    path = derivative_path(applied["out"], subject=subject, space="MNI152NLin2009cAsym",
                           res="1p5", desc=target, suffix="attention")
    return np.asarray(nib.load(path).dataobj)


def test_held_out_predictions_separate_the_groups(applied) -> None:
    table = _predictions(applied)
    mdd = table[table.target == "MDD"]
    auc = roc_auc_score(mdd["group"] == "MDD", mdd["value"])
    assert auc >= 0.85, auc
    score = table[table.target == "Score"]
    r, _ = pearsonr(score["value"], score["Score"])
    assert r >= 0.5, r


def _concentration(attention: np.ndarray, planted: np.ndarray) -> float:
    """Share of the top 1 % attention voxels in ``planted`` over its share of the brain."""
    brain = attention != 0
    top = attention >= np.percentile(attention[brain], 99)
    return float((top & planted).sum() / top.sum() / ((planted & brain).sum() / brain.sum()))


def test_classifier_attention_concentrates_in_the_planted_block(applied) -> None:
    """Top-1 % share in the block >= 3x its brain share: mean map and per-subject median."""
    planted = np.zeros(CLASSIFIER_GRID.shape, bool)
    planted[MDD_BLOCK] = True
    maps = [_attention(applied, subject, "MDD") for subject in HELD_OUT]
    ratios = [_concentration(attention, planted) for attention in maps]
    assert _concentration(np.mean(maps, axis=0), planted) >= 3, ratios
    assert np.median(ratios) >= 3, ratios


def test_outputs_and_sidecars(applied) -> None:
    out, models = applied["out"], applied["models"]
    table = pd.read_csv(derivative_path(out, subject="h01", **PREDICTIONS), sep="\t")
    assert list(table.columns) == ["model", "target", "value", "std", "n_models", "distance",
                                   "in_distribution", "in_training", "site", "harmonized"]
    assert list(table["in_training"].astype(str).str.lower()) == ["false", "false"]
    # bundles trained without harmonisation: no site is read, none is harmonised
    assert table[["site", "harmonized"]].isna().all().all()
    assert list(table["target"]) == ["MDD", "Score"] and list(table["n_models"]) == [3, 3]
    assert 0 <= table["value"][0] <= 1 and (table["std"] > 0).all()
    bundle = models[0].bundle
    gm = derivative_path(out, subject="h01", **GM_INPUT.entities)
    x = torch.from_numpy(load_input(gm, bundle.input_spec))[None, None]
    with torch.no_grad():  # the bundle's own fold networks, unfused, contiguous
        p_mdd = [torch.softmax(net(x), 1)[0, 1].item() for net in bundle.ensemble()]
    assert table["value"][0] == pytest.approx(np.mean(p_mdd), abs=1e-5)
    assert table["std"][0] == pytest.approx(np.std(p_mdd), abs=1e-5)
    sidecar = json.loads(sidecar_path(derivative_path(out, subject="h01", **PREDICTIONS))
                         .read_text())
    assert sidecar["Models"][0]["weights"] == {f["file"]: f["sha256"] for f in bundle.meta["folds"]}
    assert sidecar["Models"][0]["version"] == "1.0.0" and sidecar["Models"][0]["synthetic"]
    assert "SYNTHETIC" in sidecar["Warning"] and set(sidecar["Columns"]) == set(table.columns)
    image = nib.load(derivative_path(out, subject="h01", space="MNI152NLin2009cAsym", res="1p5",
                                     desc="MDD", suffix="attention"))
    assert image.shape == CLASSIFIER_GRID.shape
    assert np.allclose(image.affine, CLASSIFIER_GRID.affine)
    data = np.asarray(image.dataobj)
    gm = np.asarray(nib.load(derivative_path(out, subject="h01", **GM_INPUT.entities)).dataobj)
    assert (data[gm == 0] == 0).all()
    assert 0.3 < np.abs(data[gm != 0]).mean() <= 1 + 1e-4  # 1 per fold map; measured 0.61
    map_sidecar = json.loads(sidecar_path(image.get_filename()).read_text())
    assert map_sidecar["Target"] == "MDD"
    assert map_sidecar["Parameters"]["Method"].startswith("gradient of the MDD log-odds")
    score = json.loads(sidecar_path(derivative_path(
        out, subject="h01", space="MNI152NLin2009cAsym", res="1p5", desc="Score",
        suffix="attention")).read_text())
    assert score["Parameters"]["Method"].startswith("guided backpropagation")
    assert map_sidecar["Sources"] == [str(derivative_path(out, subject="h01", **GM_INPUT.entities))]


def test_every_bundle_carries_its_card_and_the_sidecar_shows_it(applied) -> None:
    """The card's cohort and evidence are the training run's own figures, and every
    predictions sidecar and report carries them."""
    classifier = applied["models"][0].bundle
    card = classifier.card
    assert card.cohort.class_counts == {"MDD": 12, "control": 12}
    assert card.cohort.n_participants == 24 and card.cohort.synthetic
    cv = classifier.meta["metrics"]["cross_validation"]["balanced_accuracy"]
    assert (card.evidence.metric, card.evidence.n_folds) == ("balanced_accuracy", 3)
    assert card.evidence.mean == pytest.approx(cv["mean"]) and card.evidence.sd == cv["sd"]
    assert card.evidence.permutation_p is None  # trained without --permutations
    assert "SYNTHETIC" in card.known_limits[0]
    assert card.summary().startswith("trained on 24 SYNTHETIC scans (12 MDD, 12 control), site "
                                     "not recorded")
    table = derivative_path(applied["out"], subject="h01", **PREDICTIONS)
    sidecar = json.loads(sidecar_path(table).read_text())
    assert evidence_line(sidecar["Models"][0]) == card.summary()
    assert sidecar["Models"][0]["card"]["summary"] == card.summary()
    assert sidecar["Models"][1]["card"]["evidence"]["metric"] == "pearson_r"


def test_participant_and_group_reports_show_each_models_card(applied) -> None:
    from html import escape

    from bids_mdd.group.report import _metrics_section
    from bids_mdd.group.results import GroupResults
    from bids_mdd.participant.report import _predictions as participant_predictions

    cards = [model.bundle.card for model in applied["models"]]
    html = participant_predictions(T1wOutputs(applied["out"], {"subject": "h01"}))
    assert all(escape(card.summary()) in html for card in cards)
    assert html.count("was not permutation-tested; do not read its output") == 2
    assert "<td>True</td>" not in html and "<td>False</td>" not in html  # the TSV's own words
    # in_distribution and in_training of both models
    assert html.count("<td>true</td>") + html.count("<td>false</td>") == 4
    sidecar = json.loads(sidecar_path(derivative_path(applied["out"], subject="h01",
                                                      **PREDICTIONS)).read_text())
    results = GroupResults(n_selected=16, missing=pd.DataFrame(), qc=pd.DataFrame(),
                           models=sidecar["Models"])
    group = _metrics_section(results)
    assert "Model evidence" in group and all(escape(card.summary()) in group for card in cards)
    assert group.count("was not permutation-tested; do not read its output") == 2


def test_domain_shift_flags_inputs_unlike_the_training_inputs(applied, tmp_path) -> None:
    """Held-out inputs of the training generator lie inside; a GM map of another kind (the
    same brain, its GM in coarse stripes the training maps never had) lies outside."""
    classifier = applied["models"][0]
    domain = classifier.domain
    calibration = classifier.bundle.meta["domain"]["calibration"]
    assert calibration["n_heldout"] == 24 and domain.quantile == 0.99
    assert calibration["heldout_fraction_flagged"] <= 0.05
    table = _predictions(applied)
    mdd = table[table.target == "MDD"]
    assert (mdd["in_distribution"].astype(str).str.lower() == "true").mean() >= 0.8, mdd["distance"]
    assert (mdd["distance"] > 0).all()
    gm_path = derivative_path(applied["out"], subject="h01", **GM_INPUT.entities)
    image = nib.load(gm_path)
    brain = np.asarray(image.dataobj) > 0
    stripes = 0.5 + 0.25 * np.sin(np.arange(brain.shape[0]) / 6)[:, None, None]
    other = brain * stripes
    odd = derivative_path(tmp_path, subject="odd", **GM_INPUT.entities)
    odd.parent.mkdir(parents=True)
    nib.save(nib.Nifti1Image(other.astype(np.float32), image.affine), odd)
    predict_participant(T1wOutputs(tmp_path, {"subject": "odd"}), applied["models"], "cpu")
    result = pd.read_csv(derivative_path(tmp_path, subject="odd", **PREDICTIONS), sep="\t")
    row = result[result.target == "MDD"].iloc[0]
    assert str(row["in_distribution"]).lower() == "false" and row["distance"] > domain.threshold
    sidecar = json.loads(sidecar_path(derivative_path(tmp_path, subject="odd", **PREDICTIONS))
                         .read_text())
    assert "outside the training distribution of toy-classifier" in sidecar["Warning"]


def test_a_training_participant_is_recognised_by_its_image(applied, tmp_path) -> None:
    """A training subject's own derivative, under another label in a dataset without a DOI,
    is found by its image hash; its predictions are marked in-sample."""
    trained_on = derivative_path(applied["root"] / "train" / "derivatives", subject="07",
                                 **GM_INPUT.entities)
    copy = derivative_path(tmp_path, subject="again", **GM_INPUT.entities)
    copy.parent.mkdir(parents=True)
    shutil.copy(trained_on, copy)
    predict_participant(T1wOutputs(tmp_path, {"subject": "again"}), applied["models"], "cpu")
    table = derivative_path(tmp_path, subject="again", **PREDICTIONS)
    rows = pd.read_csv(table, sep="\t")
    assert list(rows["in_training"].astype(str).str.lower()) == ["true", "true"]
    warning = json.loads(sidecar_path(table).read_text())["Warning"]
    assert "toy-classifier, toy-dfrn were trained on this participant" in warning
    # a participant preprocessed anew (another image) under a training label is not found by
    # its label alone: the toy bundles record no dataset DOI to tell their cohort by
    stranger = derivative_path(tmp_path, subject="07", **GM_INPUT.entities)
    stranger.parent.mkdir(parents=True)
    shutil.copy(derivative_path(applied["out"], subject="h01", **GM_INPUT.entities), stranger)
    predict_participant(T1wOutputs(tmp_path, {"subject": "07"}), applied["models"], "cpu",
                        dataset=SourceDataset("10.0/none"))
    rows = pd.read_csv(derivative_path(tmp_path, subject="07", **PREDICTIONS), sep="\t")
    assert list(rows["in_training"].astype(str).str.lower()) == ["false", "false"]


def test_rerun_skips_only_when_the_same_weights_made_the_outputs(applied) -> None:
    out, models = applied["out"], applied["models"]
    assert up_to_date(T1wOutputs(out, {"subject": "h02"}), models)
    path = sidecar_path(derivative_path(out, subject="h02", **PREDICTIONS))
    original = path.read_text()
    changed = json.loads(original)
    changed["Fingerprint"]["Weights"][0]["fold-1.safetensors"] = "0" * 64
    path.write_text(json.dumps(changed))
    try:
        assert not up_to_date(T1wOutputs(out, {"subject": "h02"}), models)
    finally:
        path.write_text(original)
    assert not up_to_date(T1wOutputs(out, {"subject": "h99"}), models)


def test_rerun_recomputes_when_an_input_changed(applied, tmp_path) -> None:
    """A model input with new content (same name), or another T1w behind it: not up to date;
    the rerun writes the new input's prediction."""
    out = tmp_path / "derivatives"
    shutil.copytree(applied["out"] / "sub-h02", out / "sub-h02")
    models, entities = applied["models"], {"subject": "h02"}
    t1w = tmp_path / "sub-h02_T1w.nii.gz"
    t1w.write_bytes(b"first T1w")
    settings = ModelStepSettings(device="cpu")
    predict_participants([T1wOutputs(out, entities)], models, settings, [t1w])
    assert up_to_date(T1wOutputs(out, entities), models, t1w)
    before = pd.read_csv(derivative_path(out, **entities, **PREDICTIONS), sep="\t")
    t1w.write_bytes(b"replaced T1w")
    assert not up_to_date(T1wOutputs(out, entities), models, t1w)
    t1w.write_bytes(b"first T1w")
    gm = derivative_path(out, **entities, **GM_INPUT.entities)  # now another person's GM
    shutil.copyfile(derivative_path(applied["out"], subject="h03", **GM_INPUT.entities), gm)
    assert not up_to_date(T1wOutputs(out, entities), models, t1w)
    predict_participants([T1wOutputs(out, entities)], models, settings, [t1w])
    assert up_to_date(T1wOutputs(out, entities), models, t1w)
    after = pd.read_csv(derivative_path(out, **entities, **PREDICTIONS), sep="\t")
    assert not np.allclose(after["value"], before["value"])
    fingerprint = json.loads(sidecar_path(derivative_path(out, **entities, **PREDICTIONS))
                             .read_text())["Fingerprint"]
    assert set(fingerprint) == {"Version", "Weights", "Evidence", "Inputs", "T1w", "DatasetDOI"}
    # another dataset DOI can change in_training: the predictions are made again
    assert not up_to_date(T1wOutputs(out, entities), models, t1w,
                          dataset=SourceDataset("10.18112/openneuro.ds000001"))
    assert fingerprint["Evidence"] == [{"domain": m.bundle.meta["domain"]["sha256"],
                                        "card": m.card.summary()} for m in models]
    assert sorted(fingerprint["Inputs"]) == sorted(
        {derivative_path(out, **entities, **m.spec.entities).relative_to(out).as_posix()
         for m in models})
    assert fingerprint["Inputs"][gm.relative_to(out).as_posix()] == sha256_of(gm)


def test_batches_give_the_single_participant_results(applied, tmp_path) -> None:
    """Three participants in batches of 2 (a full and a partial batch) and a missing one: the
    same values and maps as one at a time (up to rounding), and the missing one's error
    alone."""
    import shutil

    out = tmp_path / "derivatives"
    for subject in ("h01", "h02", "h03"):
        shutil.copytree(applied["out"] / f"sub-{subject}", out / f"sub-{subject}")
    entities = [{"subject": s} for s in ("h01", "h02", "h03", "h99")]
    settings = ModelStepSettings(device="cpu", threads=1, batch_size=2)
    outcomes = predict_participants([T1wOutputs(out, e) for e in entities], applied["models"],
                                    settings)
    assert isinstance(outcomes[3], BidsMddError) and "sub-h99" in str(outcomes[3])
    for subject, outcome in zip(("h01", "h02", "h03"), outcomes):
        batched = pd.read_csv(outcome, sep="\t")
        single = pd.read_csv(derivative_path(applied["out"], subject=subject, **PREDICTIONS),
                             sep="\t")
        np.testing.assert_allclose(batched["value"], single["value"], atol=1e-5)
        for target in ("MDD", "Score"):
            path = derivative_path(out, subject=subject, space="MNI152NLin2009cAsym",
                                   res="1p5", desc=target, suffix="attention")
            # another batch size may take other convolution kernels (oneDNN), whose rounding
            # flips a few ReLU gates near zero: same maps up to 1 % of their peak
            batch_map, single_map = (np.asarray(nib.load(path).dataobj),
                                     _attention(applied, subject, target))
            np.testing.assert_allclose(batch_map, single_map,
                                       atol=0.01 * np.abs(single_map).max())
            assert np.corrcoef(batch_map.ravel(), single_map.ravel())[0, 1] > 0.9999
        sidecar = json.loads(sidecar_path(outcome).read_text())
        assert sidecar["Parameters"]["BatchSize"] == 2 and sidecar["Parameters"]["Threads"] == 1


def _edited_copy(bundle: Path, where: Path, edit) -> Path:
    copy = where / bundle.name
    shutil.copytree(bundle, copy)
    meta = json.loads((copy / "model.json").read_text())
    edit(meta)
    (copy / "model.json").write_text(json.dumps(meta))
    return copy


@pytest.mark.parametrize("edit,message", [
    (lambda m: m["input"]["entities"].update(desc="smooth4modulated"), "does not write"),
    (lambda m: m["input"]["entities"].update(res="2"), "unknown grid"),
    (lambda m: m["input"].update(grid_shape=[91, 109, 91]), "trained on a [91, 109, 91] grid"),
])
def test_a_bundle_whose_input_preprocessing_cannot_give_is_refused(applied, tmp_path, edit,
                                                                   message) -> None:
    copy = _edited_copy(applied["root"] / "models" / "toy-classifier", tmp_path, edit)
    with pytest.raises(BidsMddError, match="model.json") as error:
        load_models([copy], "cpu")
    assert error.value.exit_code == 65 and message in str(error.value)


def test_two_bundles_for_one_target_are_refused(applied, tmp_path) -> None:
    copy = _edited_copy(applied["root"] / "models" / "toy-classifier", tmp_path,
                        lambda m: m.update(name="other"))
    with pytest.raises(BidsMddError, match="several bundles predict MDD") as error:
        load_models([applied["root"] / "models", copy], "cpu")
    assert error.value.exit_code == 64


def test_missing_or_off_grid_inputs_name_the_file(applied, tmp_path) -> None:
    models = applied["models"][:1]
    with pytest.raises(BidsMddError, match="needs this preprocessing output") as error:
        predict_participant(T1wOutputs(tmp_path, {"subject": "h01"}), models, "cpu")
    assert error.value.exit_code == 66
    path = derivative_path(tmp_path, subject="h01", **GM_INPUT.entities)
    path.parent.mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.ones((60, 72, 60), np.float32), np.eye(4) * 3), path)
    with pytest.raises(BidsMddError, match="not on the 1p5 mm MNI grid") as error:
        predict_participant(T1wOutputs(tmp_path, {"subject": "h01"}), models, "cpu")
    assert error.value.exit_code == 65 and str(path) in str(error.value)


def test_subnormal_input_values_reach_the_networks_as_zeros(tmp_path) -> None:
    """A background of subnormal floats (slow on CPU, zero to any model) is read as zeros;
    the smallest normal number and everything above it are kept as they are."""
    from bids_mdd.models.inputs import read_on_grid

    data = np.zeros(CLASSIFIER_GRID.shape, np.float32)
    tiny = np.finfo(np.float32).tiny
    data[0, 0, :4] = [tiny / 2, -tiny / 1e6, tiny, 0.5]
    path = tmp_path / "gm.nii.gz"
    nib.save(nib.Nifti1Image(data, CLASSIFIER_GRID.affine), path)
    read = read_on_grid(path, GM_INPUT)
    assert read[0, 0, :4].tolist() == [0.0, 0.0, tiny, 0.5]
    assert read.dtype == np.float32 and np.count_nonzero(read) == 2


def test_default_models_are_the_real_data_bundles_with_their_evidence(caplog) -> None:
    with caplog.at_level(logging.WARNING):
        models = load_models(None, "cpu")
    assert sorted(m.target for m in models) == ["BDI", "MDD", "RRS-sum", "Zung_SDS"]
    assert all(m.bundle.name.startswith("ds002748-") for m in models)
    assert "packaged ds002748 bundles, trained on the 72 scans of OpenNeuro ds002748" in \
        caplog.text
    assert {m.spec.entities["res"] for m in models} == {"1p5", "1"}
    for model in models:
        meta, card = model.bundle.meta, model.bundle.card
        assert meta["synthetic"] is False and card.intended_use == "research; not for diagnosis"
        assert card.cohort.doi == "10.18112/openneuro.ds002748.v1.0.5"
        assert card.evidence.n_permutations == 1000 and card.evidence.permutation_p is not None
        assert any("10.1155/2021/8846097" in limit for limit in card.known_limits)
        hashes = meta["data_fingerprint"]["images_sha256"]
        assert len(hashes) == card.cohort.n_participants == meta["training"]["n_inputs"]
        if model.target == "MDD":
            assert len(hashes) == 72 and card.cohort.class_counts == {"MDD": 51, "control": 21}
        assert model.spec.zoom == 0.25 and model.domain is not None


def test_the_demo_bundles_are_the_labelled_synthetic_set(caplog) -> None:
    with caplog.at_level(logging.INFO):
        models = load_models([Path("demo")], "cpu")
    assert [m.target for m in models] == ["MDD", "Anhedonia", "Anxiety", "Appetite", "Sleep",
                                          "Suicidality"]
    assert all(m.bundle.name.startswith("demo-synthetic-") for m in models)
    assert "packaged bundles, trained on SYNTHETIC data" in caplog.text


def test_models_names_a_packaged_set_unless_a_folder_of_that_name_exists(tmp_path,
                                                                          monkeypatch) -> None:
    assert resolve_models([Path("demo")]) == [packaged_models_dir("demo")]
    assert [p.name for p in packaged_models_dir("demo").iterdir() if p.is_dir()] != []
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo" / "bids").mkdir(parents=True)  # make demo's dataset folder
    assert resolve_models([Path("demo")]) == [packaged_models_dir("demo")]
    shutil.copytree(packaged_models_dir("demo") / "demo-synthetic-densenet121",
                    tmp_path / "demo" / "mine")
    assert resolve_models([Path("demo")]) == [Path("demo")]  # the user's bundles win
    with pytest.raises(BidsMddError, match="no packaged model set 'real'") as error:
        packaged_models_dir("real")
    assert error.value.exit_code == 64
    with pytest.raises(BidsMddError, match=r"^--models nosuchset: neither a folder nor a "
                       r"packaged model set \(the package ships ds002748, demo\)") as error:
        resolve_models([Path("nosuchset")])
    assert error.value.exit_code == 66


def test_bad_models_fail_before_preprocessing(tiny_bids, tmp_path, capsys, monkeypatch) -> None:
    calls: list = []
    monkeypatch.setattr("bids_mdd.participant.runner.preprocess",
                        lambda *args, **kwargs: calls.append(args) or [])
    code = run_main([str(tiny_bids), str(tmp_path / "out"), "participant", "-w",
                     str(tmp_path / "work"), "--models", str(tmp_path / "nowhere")])
    assert code == 66 and calls == []
    assert "nowhere: neither a folder nor a packaged model set" in capsys.readouterr().err


def test_rerun_with_fewer_models_removes_the_dropped_models_outputs(applied, tmp_path) -> None:
    """A rerun with the classifier only: the Score map, its sidecar and its figure go; the
    classifier's stay, and so do the outputs of the participant's other T1w."""
    out = tmp_path / "derivatives"
    shutil.copytree(applied["out"] / "sub-h02", out / "sub-h02")
    maps = {target: derivative_path(out, subject="h02", space="MNI152NLin2009cAsym", res="1p5",
                                    desc=target, suffix="attention") for target in ("MDD", "Score")}
    figures = {target: derivative_path(out, subject="h02", datatype="figures",
                                       desc=f"attention{target}", extension=".svg")
               for target in ("MDD", "Score")}
    for figure in figures.values():  # (this toy cohort has no MNI T1w to draw them on)
        figure.parent.mkdir(parents=True, exist_ok=True)
        figure.write_text("<svg/>")
    assert all(p.is_file() for p in maps.values())
    other_run = maps["Score"].with_name(maps["Score"].name.replace("sub-h02_", "sub-h02_run-2_"))
    shutil.copy(maps["Score"], other_run)
    classifier = [m for m in applied["models"] if m.target == "MDD"]
    predict_participant(T1wOutputs(out, {"subject": "h02"}), classifier, "cpu")
    table = pd.read_csv(derivative_path(out, subject="h02", **PREDICTIONS), sep="\t")
    assert list(table["target"]) == ["MDD"]
    assert not maps["Score"].exists() and not sidecar_path(maps["Score"]).exists()
    assert not figures["Score"].exists()
    assert maps["MDD"].is_file() and sidecar_path(maps["MDD"]).is_file()
    assert figures["MDD"].is_file() and other_run.is_file()


def _reference_gradient(net: torch.nn.Module, x: torch.Tensor, score, guided: bool):
    """The textbook implementation: autograd's own backward everywhere, each ReLU's input
    gradient clamped at zero by a module backward hook (guided)."""
    leaf = x.detach().clone().requires_grad_(True)
    handles = [m.register_full_backward_hook(
        lambda module, grad_in, grad_out: tuple(g.clamp(min=0) for g in grad_in))
        for m in net.modules() if guided and isinstance(m, torch.nn.ReLU)]
    try:
        with torch.enable_grad():
            out = net(leaf)
            (grad,) = torch.autograd.grad(score(out).sum(), leaf)
    finally:
        for handle in handles:
            handle.remove()
    return out.detach(), grad


@pytest.mark.parametrize("architecture,kwargs,shape", [
    ("dfrn", {"channels": [4, 8, 8, 8]}, (23, 30, 21)),
    ("densenet121", {"init_features": 4, "growth_rate": 4}, (33, 47, 39)),
    ("densenet121", {"init_features": 4, "growth_rate": 4, "first_stride": (2, 2, 2)},
     (35, 40, 37)),
    ("densenet121", {"init_features": 4, "growth_rate": 4, "first_stride": (1, 1, 1)},
     (17, 19, 16)),
    ("resnet10", {"width": 4}, (20, 24, 21)),
])
@pytest.mark.parametrize("guided", [True, False])
def test_inference_networks_give_the_reference_outputs_and_maps(architecture, kwargs, shape,
                                                                guided) -> None:
    """Folded BatchNorm, channels_last_3d, the one-pass guided ReLUs and the input
    convolution's own gradient: the unmodified network's outputs and (guided) input gradients
    within float tolerance, for a batch of two, odd grid sizes and the three first strides."""
    torch.manual_seed(0)
    reference = build_network(architecture, **kwargs).eval()
    for module in reference.modules():  # non-trivial BatchNorm statistics to fold
        if isinstance(module, torch.nn.BatchNorm3d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    fast = _for_inference(copy.deepcopy(reference), "cpu")
    x = torch.randn(2, 1, *shape)
    # not zero for the DFRN's single output (out[:, -1] - out[:, 0] would be)
    score = lambda out: out[:, -1] - 0.5 * out[:, 0]  # noqa: E731
    expected_out, expected = _reference_gradient(reference, x, score, guided)
    assert expected.abs().max() > 0
    out, grad = input_gradient(fast, x.contiguous(memory_format=torch.channels_last_3d), score,
                               guided=guided)
    torch.testing.assert_close(out, expected_out, rtol=1e-4, atol=1e-5)
    assert grad.shape == x.shape
    torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-5 * expected.abs().max())
    assert not any(p.grad is not None for p in fast.parameters())  # no weight gradients


def test_no_attention_writes_the_predictions_without_maps(applied, tmp_path) -> None:
    """--no-attention: the same predictions, no maps, sidecars or figures (earlier ones are
    removed); up to date only for a run without maps, so a rerun asking for maps writes them
    (the same maps as before)."""
    from bids_mdd.cli.parser import build_parser

    out, entities = tmp_path / "derivatives", {"subject": "h02"}
    shutil.copytree(applied["out"] / "sub-h02", out / "sub-h02")
    models = applied["models"]
    maps = {m.target: derivative_path(out, **entities, space="MNI152NLin2009cAsym", res="1p5",
                                      desc=m.target, suffix="attention") for m in models}
    figure = derivative_path(out, **entities, datatype="figures", desc="attentionMDD",
                             extension=".svg")
    figure.parent.mkdir(parents=True, exist_ok=True)
    figure.write_text("<svg/>")  # (this toy cohort has no MNI T1w to draw them on)
    outputs = T1wOutputs(out, entities)
    assert up_to_date(outputs, models) and not up_to_date(outputs, models, attention=False)
    args = build_parser().parse_args(["bids", "out", "participant", "--no-attention"])
    predict_participant(T1wOutputs(out, entities), models, "cpu", attention=not args.no_attention)
    table = derivative_path(out, **entities, **PREDICTIONS)
    expected = pd.read_csv(derivative_path(applied["out"], **entities, **PREDICTIONS), sep="\t")
    pd.testing.assert_frame_equal(pd.read_csv(table, sep="\t"), expected, atol=1e-5)
    assert not any(p.exists() or sidecar_path(p).exists() for p in maps.values())
    assert not figure.exists()
    assert json.loads(sidecar_path(table).read_text())["Parameters"]["Attention"] is False
    assert up_to_date(T1wOutputs(out, entities), models, attention=False)
    assert not up_to_date(outputs, models)  # predictions without maps: maps are asked
    predict_participant(T1wOutputs(out, entities), models, "cpu")
    for target, path in maps.items():
        np.testing.assert_allclose(np.asarray(nib.load(path).dataobj),
                                   _attention(applied, "h02", target), atol=1e-4)
    assert up_to_date(T1wOutputs(out, entities), models)
