"""Group-level inputs: covariates chosen from participants.tsv and the QC metrics, missing
outputs listed, and QC outliers flagged by robust z-scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bids_mdd.bids.discovery import T1wInput
from bids_mdd.errors import BidsMddError, ExitCode
from bids_mdd.group.inputs import ParticipantFiles, covariate_table, missing_outputs
from bids_mdd.group.qc import ROBUST_Z, qc_table, robust_z

pytestmark = pytest.mark.unit  # make test-fast


def files(tivs: list[float | None], gm: bool = True) -> list[ParticipantFiles]:
    """One ParticipantFiles per TIV (None: no QC metrics), subjects 01, 02, ..."""
    return [ParticipantFiles(t1w=T1wInput(Path(f"sub-{i:02d}_T1w.nii.gz"), f"{i:02d}"),
                             gm=Path("gm.nii.gz") if gm else None,
                             qc=None if tiv is None else {"tiv_ml": tiv, "gm_fraction": 0.45,
                                                          "flags": []},
                             predictions=None)
            for i, tiv in enumerate(tivs, start=1)]


PARTICIPANTS = pd.DataFrame({"age": [30.0, 40.0, np.nan], "Gender": ["f", "m", "f"],
                             "site": ["a", "a", "a"]}, index=["01", "02", "03"])


def test_automatic_covariates_drop_incomplete_ones_with_a_note() -> None:
    table, notes = covariate_table(PARTICIPANTS, files([1400.0, 1500.0, 1600.0]), None,
                                   Path("participants.tsv"))
    assert list(table.columns) == ["Gender", "TIV"]  # age is missing for sub-03
    assert table["TIV"].tolist() == [1400.0, 1500.0, 1600.0]
    assert notes == ["covariate age left out: missing for 1 participant(s)"]
    table, notes = covariate_table(PARTICIPANTS.iloc[:2], files([1400.0, None]), None,
                                   Path("participants.tsv"))
    assert list(table.columns) == ["age", "Gender"]
    assert notes == ["covariate TIV left out: missing for 1 participant(s)"]


def test_requested_covariates_are_kept_or_refused() -> None:
    table, notes = covariate_table(PARTICIPANTS, files([1.0, 2.0, 3.0]), ["site", "tiv"],
                                   Path("p.tsv"))
    assert list(table.columns) == ["site", "TIV"] and notes == []
    with pytest.raises(BidsMddError, match="no covariate column 'handedness'") as error:
        covariate_table(PARTICIPANTS, files([1.0, 2.0, 3.0]), ["handedness"], Path("p.tsv"))
    assert error.value.exit_code == ExitCode.USAGE
    table, _ = covariate_table(PARTICIPANTS, files([1.0, 2.0, 3.0]), [], Path("p.tsv"))
    assert table.shape == (3, 0)


def test_qc_outlier_by_robust_z_and_participant_flags() -> None:
    tivs = [1500.0 + 10 * k for k in range(-4, 5)] + [2600.0]  # the last one is far out
    items = files(tivs)
    items[0].qc["flags"] = ["template_ncc 0.41 outside plausible range 0.6-1.0"]
    table = qc_table(items)
    assert table["outlier"].tolist() == [True] + [False] * 8 + [True]
    z = table["z_tiv_ml"].to_numpy()
    # median 1505, MAD 25 x 1.4826: (2600 - 1505) / 37.065
    assert z[-1] == pytest.approx((2600 - 1505) / (25 * 1.482602218505602), rel=1e-6)
    assert z[-1] > ROBUST_Z and "tiv_ml 2600 is a group outlier (robust z +29.5)" in \
        table["flags"].iloc[-1]
    assert table["flags"].iloc[0].startswith("template_ncc 0.41")
    assert np.isnan(table["z_gm_fraction"]).all()  # MAD 0: no z
    assert robust_z(pd.Series([1.0, np.nan, 3.0])).isna().tolist() == [False, True, False]


def test_missing_outputs_listed_with_crash_file(tmp_path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "crash-subject-02.txt").write_text("boom")
    items = files([1500.0, None], gm=True)
    items[1] = ParticipantFiles(t1w=items[1].t1w, gm=None, qc=None, predictions=None)
    table = missing_outputs(items, tmp_path)
    assert table.to_dict("records") == [
        {"participant": "sub-01", "missing": "predictions", "crash": ""},
        {"participant": "sub-02", "missing": "GM map, QC metrics, predictions",
         "crash": "logs/crash-subject-02.txt"}]
