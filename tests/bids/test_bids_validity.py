"""The official BIDS validator (bids-validator-deno) on a demo-like output: participant and
group levels of 3 SYNTHETIC participants give 0 errors, and only the warnings the
documentation lists. The output goes where the BIDS specification puts derivatives, inside the
input dataset (BIDS_DIR/derivatives/bids_mdd), the most demanding of the allowed layouts: the
raw files stay byte-identical, the validator on BIDS_DIR finds nothing of ours, discovery takes
no derivative for a T1w, a rerun recomputes nothing, and the group level finds the outputs."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd

from bids_mdd.bids.discovery import discover_t1w, open_layout
from bids_mdd.bids.validation import run_validator
from bids_mdd.cli.run import main
from bids_mdd.synth.cohort import CohortSpec, generate_cohort
from conftest import REPO, checksums

#: Warnings that stay, each explained in docs/outputs.md, "BIDS validity".
KNOWN_WARNINGS = {"TOO_FEW_AUTHORS"}


def _mtimes(out: Path) -> dict[Path, int]:
    """What a rerun would have to rewrite if it recomputed anything: images, transforms,
    tables."""
    return {path: path.stat().st_mtime_ns for pattern in ("*.nii.gz", "*.h5", "*.tsv")
            for path in out.rglob(pattern)}


def test_demo_size_output_passes_the_bids_validator(templateflow_home, tmp_path) -> None:
    bids, work = tmp_path / "bids", tmp_path / "work"
    out = bids / "derivatives" / "bids_mdd"
    generate_cohort(bids, CohortSpec(n_mdd=2, n_hc=1, seed=1, resolution=4.0), n_jobs=2)
    raw = checksums(bids)
    participant = [str(bids), str(out), "participant", "-w", str(work), "--sloppy",
                   "--nprocs", "2", "--models", "demo"]
    assert main(participant) == 0
    written = _mtimes(out)
    assert len([p for p in written if p.name.endswith("_predictions.tsv")]) == 3
    assert main(participant + ["--omp-nthreads", "1"]) == 0  # a rerun: nothing recomputed
    assert _mtimes(out) == written
    assert main([str(bids), str(out), "group", "-w", str(work)]) == 0
    assert (out / "group" / "group.html").is_file()
    assert len(pd.read_csv(out / "group" / "group_predictions.tsv", sep="\t")[
        "participant_id"].unique()) == 3
    after = checksums(bids)
    assert {k: v for k, v in after.items() if k in raw} == raw  # the raw files, unchanged
    assert all(key.startswith("derivatives/bids_mdd") for key in set(after) - set(raw))
    assert [t.path for t in discover_t1w(open_layout(bids))] == sorted(
        bids.glob("sub-*/anat/sub-*_T1w.nii.gz"))
    on_input = run_validator(bids, warnings=True)
    assert [i for i in on_input if i["severity"] == "error"] == []
    assert [i for i in on_input if "bids_mdd" in str(i.get("location"))] == []
    issues = run_validator(out, warnings=True)
    counts = Counter((issue["severity"], issue["code"]) for issue in issues)
    errors = {code: n for (severity, code), n in counts.items() if severity == "error"}
    assert errors == {}, [i for i in issues if i["severity"] == "error"][:5]
    warnings = {code for (severity, code) in counts if severity == "warning"}
    assert warnings == KNOWN_WARNINGS, [i for i in issues if i["code"] not in KNOWN_WARNINGS][:5]
    outputs_page = (REPO / "docs" / "outputs.md").read_text()
    section = outputs_page[outputs_page.index("## BIDS validity"):]
    assert all(f"`{code}`" in section for code in KNOWN_WARNINGS)
    # the sidecar keys BIDS asks of these files are there, with the input as reference
    sidecar = json.loads((out / "sub-001/anat/sub-001_desc-preproc_T1w.json").read_text())
    assert sidecar["SkullStripped"] is False  # whole-head synthetic T1w, bias-corrected only
    assert sidecar["SpatialReference"] == "bids:raw:sub-001/anat/sub-001_T1w.nii.gz"
    mni = json.loads(next(out.glob("sub-001/anat/*_res-1p5_*desc-smooth8modulated_probseg.json"))
                     .read_text())
    assert mni["Resolution"] == {"1p5": "1.5 mm isotropic, 121 x 145 x 121 voxels, origin "
                                        "(-90.0, -126.0, -72.0) mm in MNI152NLin2009cAsym"}
