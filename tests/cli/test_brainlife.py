"""The brainlife.io entry point on a SYNTHETIC T1w through a config.json, outside any
container: brainlife's output layout, product.json, and one-line errors for a bad config."""

from __future__ import annotations

import json
import re
import shutil

import nibabel as nib
import pytest

from bids_mdd.cli.brainlife import main
from bids_mdd.synth.cohort import generate_cohort
from bids_mdd.synth.model import CohortSpec


def test_main_writes_brainlifes_layout_and_product_json(templateflow_home, tmp_path) -> None:
    generate_cohort(tmp_path / "cohort", CohortSpec(n_mdd=1, n_hc=0, seed=3, resolution=4.0),
                    n_jobs=1)
    (tmp_path / "t1w").mkdir()
    shutil.copyfile(tmp_path / "cohort/sub-001/anat/sub-001_T1w.nii.gz",
                    tmp_path / "t1w/t1.nii.gz")
    app = tmp_path / "app"
    app.mkdir()
    config = {"t1": "../t1w/t1.nii.gz", "age": 41, "sex": "m", "diagnosis": "MDD",
              "models": "demo", "sloppy": True, "nprocs": 2}
    (app / "config.json").write_text(json.dumps(config))
    assert main([str(app / "config.json"), "--out-dir", str(app)]) == 0
    assert nib.load(app / "t1w/t1.nii.gz").shape == (182, 218, 182)
    assert nib.load(app / "gm/gm.nii.gz").shape == (121, 145, 121)
    predictions = json.loads((app / "predictions/predictions.json").read_text())
    assert len(predictions) == 6 and {p["target"] for p in predictions} >= {"MDD"}
    assert all(p["evidence"] for p in predictions)  # each model card's summary travels along
    report = (app / "html/index.html").read_text()
    images = re.findall(r"<img src='([^']+)'", report)
    assert images and all((app / "html" / image).is_file() for image in images)
    assert (app / "derivatives/dataset_description.json").is_file()
    product = json.loads((app / "product.json").read_text())
    infos = [m for m in product["brainlife"] if m["type"] == "info"]
    assert len(infos) == 6 and any(m["msg"].startswith("demo-synthetic") for m in infos)
    assert any("SYNTHETIC" in m["msg"] for m in product["brainlife"]
               if m["type"] == "warning")  # the demo models' caution reaches the user
    assert product["predictions"] == predictions
    assert set(product["qc"]) >= {"tiv_ml", "gm_fraction", "flags"}
    assert product["participant"] == {"age": 41, "sex": "m", "diagnosis": "MDD"}
    assert json.loads((app / "config.json").read_text()) == config  # left as it was


@pytest.mark.parametrize("config, code, message", [
    (None, 66, "cannot read the brainlife config"),
    ("{not json", 65, "not JSON"),
    ('{"age": 30}', 65, 'no "t1" key'),
    ('{"t1": "missing.nii.gz"}', 66, "which is not a file"),
])
def test_bad_config_is_one_line_with_its_exit_code(tmp_path, capsys, config, code,
                                                   message) -> None:
    if config is not None:
        (tmp_path / "config.json").write_text(config)
    assert main([str(tmp_path / "config.json"), "--out-dir", str(tmp_path)]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bids_mdd brainlife: error: ") and message in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == (["config.json"] if config else [])
