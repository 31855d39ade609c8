"""Derivative names: every name in the design builds from entities and parses back to them."""

from __future__ import annotations

import pytest

from bids_mdd.bids.names import derivative_path, parse_path, raw_path, relative_path, sidecar_path

pytestmark = pytest.mark.unit  # make test-fast

SPACE = "MNI152NLin2009cAsym"
CASES = [
    ("sub-01/anat/sub-01_desc-preproc_T1w.nii.gz", dict(subject="01", desc="preproc",
                                                         suffix="T1w")),
    ("sub-01/ses-A/anat/sub-01_ses-A_desc-brain_mask.nii.gz",
     dict(subject="01", session="A", desc="brain", suffix="mask")),
    ("sub-01/anat/sub-01_label-CSF_probseg.nii.gz", dict(subject="01", label="CSF",
                                                         suffix="probseg")),
    ("sub-01/anat/sub-01_run-2_from-T1w_to-MNI152NLin2009cAsym_mode-image_xfm.h5",
     {"subject": "01", "run": 2, "from": "T1w", "to": SPACE, "mode": "image", "suffix": "xfm",
      "extension": ".h5"}),
    (f"sub-01/anat/sub-01_space-{SPACE}_res-1p5_label-GM_desc-modulated_probseg.nii.gz",
     dict(subject="01", space=SPACE, res="1p5", label="GM", desc="modulated", suffix="probseg")),
    (f"sub-01/anat/sub-01_space-{SPACE}_res-1p5_label-GM_desc-smooth8modulated_probseg.nii.gz",
     dict(subject="01", space=SPACE, res="1p5", label="GM", desc="smooth8modulated",
          suffix="probseg")),
    (f"sub-01/ses-A/anat/sub-01_ses-A_space-{SPACE}_res-1_desc-preproc_T1w.nii.gz",
     dict(subject="01", session="A", space=SPACE, res="1", desc="preproc", suffix="T1w")),
    ("sub-01/anat/sub-01_desc-qc_metrics.json",
     dict(subject="01", desc="qc", suffix="metrics", extension=".json")),
    ("sub-01/anat/sub-01_predictions.tsv", dict(subject="01", suffix="predictions",
                                                extension=".tsv")),
    (f"sub-01/anat/sub-01_space-{SPACE}_res-1_desc-Anhedonia_attention.nii.gz",
     dict(subject="01", space=SPACE, res="1", desc="Anhedonia", suffix="attention")),
    ("sub-01/anat/sub-01_atlas-AAL2_dseg.nii.gz", dict(subject="01", atlas="AAL2",
                                                       suffix="dseg")),
    ("figures/sub-01_ses-A_desc-segmentation.svg",
     dict(datatype="figures", subject="01", session="A", desc="segmentation",
          extension=".svg")),
    ("sub-01.html", dict(subject="01", extension=".html")),
    ("group/group_predictions.tsv", dict(suffix="predictions", extension=".tsv")),
    ("group/group_metrics.json", dict(suffix="metrics", extension=".json")),
    ("group/group_clusters.tsv", dict(suffix="clusters", extension=".tsv")),
    (f"group/group_space-{SPACE}_res-1p5_contrast-MDDvsHC_stat-t_statmap.nii.gz",
     dict(space=SPACE, res="1p5", contrast="MDDvsHC", stat="t", suffix="statmap")),
    (f"group/group_space-{SPACE}_res-1p5_contrast-MDDvsHC_desc-FDR_mask.nii.gz",
     dict(space=SPACE, res="1p5", contrast="MDDvsHC", desc="FDR", suffix="mask")),
    (f"group/group_space-{SPACE}_res-1_desc-Sleep_attention.nii.gz",
     dict(space=SPACE, res="1", desc="Sleep", suffix="attention")),
    ("group/group.html", dict(extension=".html")),
]


@pytest.mark.parametrize(("expected", "entities"), CASES, ids=[c[0] for c in CASES])
def test_round_trip(expected: str, entities: dict) -> None:
    assert relative_path(**entities) == expected
    parsed = parse_path(expected)
    wanted = {"extension": ".nii.gz", **entities}
    if not expected.startswith(("group", "figures", "sub-01.html")):
        wanted.setdefault("datatype", "anat")
    assert {k: parsed.get(k) for k in wanted} == wanted
    assert relative_path(**parsed) == expected


def test_unknown_entities_are_refused() -> None:
    with pytest.raises(ValueError, match="no bids_mdd output name"):
        relative_path(subject="01", task="rest", suffix="bold")


def test_paths_and_sidecars(tmp_path) -> None:
    path = derivative_path(tmp_path, subject="01", desc="preproc", suffix="T1w")
    assert path == tmp_path / "sub-01/anat/sub-01_desc-preproc_T1w.nii.gz"
    assert sidecar_path(path).name == "sub-01_desc-preproc_T1w.json"
    assert sidecar_path(tmp_path / "x_predictions.tsv").name == "x_predictions.json"
    assert raw_path(tmp_path, subject="7", datatype="anat", suffix="T1w") == (
        tmp_path / "sub-7/anat/sub-7_T1w.nii.gz")
