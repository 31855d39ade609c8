"""T1w discovery with pybids: labels, sessions, runs, filter files and the pybids database."""

from __future__ import annotations

import json

import pytest

from bids_mdd.bids.discovery import (
    discover_t1w,
    load_bids_filters,
    normalize_labels,
    open_layout,
    select_one_per_participant,
)
from bids_mdd.errors import BidsMddError

pytestmark = pytest.mark.unit  # make test-fast

REAL_SUBJECTS = ["02", "03", "12", "13", "14", "15", "16", "25", "29", "30", "34", "37", "40",
                 "48", "52", "53", "55", "57", "60", "68"]


def test_real_dataset_has_20_t1w(real_bids) -> None:
    inputs = discover_t1w(open_layout(real_bids))
    assert [i.subject for i in inputs] == REAL_SUBJECTS
    assert all(i.session is None and i.path.name == f"sub-{i.subject}_T1w.nii.gz"
               for i in inputs)


def test_real_dataset_label_filter_with_and_without_prefix(real_bids) -> None:
    inputs = discover_t1w(open_layout(real_bids), participant_labels=["sub-52", "02", "52"])
    assert [i.subject for i in inputs] == ["02", "52"]


def test_normalize_labels() -> None:
    assert normalize_labels(["sub-01", "01", "02"], "sub-") == ["01", "02"]
    assert normalize_labels(None, "ses-") is None
    for given, what in (("sub-sub-001", "gives the label 'sub-001', which is not a BIDS label"),
                        ("", "is empty"), ("sub-", "is empty"), ("0 1", "gives the label '0 1'")):
        with pytest.raises(BidsMddError, match=f"--participant-label '{given}' {what}") as error:
            normalize_labels([given], "sub-")
        assert error.value.exit_code == 18


def test_every_session_and_run_is_found(tiny_bids) -> None:
    inputs = discover_t1w(open_layout(tiny_bids))
    assert [(i.subject, i.session, i.run) for i in inputs] == [
        ("01", "1", 1), ("01", "1", 2), ("01", "2", 1), ("02", "1", None), ("02", "2", None),
        ("03", None, None)]
    assert inputs[1].output_entities() == {"subject": "01", "session": "1", "run": 2}


def test_session_filter(tiny_bids) -> None:
    inputs = discover_t1w(open_layout(tiny_bids), session_labels=["ses-2"])
    assert [(i.subject, i.session) for i in inputs] == [("01", "2"), ("02", "2")]


def test_bids_filter_file(tiny_bids, tmp_path) -> None:
    path = tmp_path / "filters.json"
    path.write_text(json.dumps({"t1w": {"run": 2}, "bold": {"task": "rest"}}))
    filters = load_bids_filters(path)
    assert filters == {"run": 2}
    inputs = discover_t1w(open_layout(tiny_bids), bids_filters=filters)
    assert [(i.subject, i.session, i.run) for i in inputs] == [("01", "1", 2)]


def test_group_uses_first_session_lowest_run(tiny_bids) -> None:
    chosen = select_one_per_participant(discover_t1w(open_layout(tiny_bids)))
    assert [(i.subject, i.session, i.run) for i in chosen] == [
        ("01", "1", 1), ("02", "1", None), ("03", None, None)]


def test_database_dir_is_reused(tiny_bids, tmp_path) -> None:
    database = tmp_path / "db"
    first = discover_t1w(open_layout(tiny_bids, database_dir=database))
    index = (database / "layout_index.sqlite").stat()
    # the dataset is unchanged: the stored index is read, not rewritten
    second = discover_t1w(open_layout(tiny_bids, database_dir=database))
    assert [i.path for i in second] == [i.path for i in first]
    again = (database / "layout_index.sqlite").stat()
    assert (again.st_ino, again.st_mtime_ns) == (index.st_ino, index.st_mtime_ns)


def test_missing_labels_are_named(tiny_bids) -> None:
    with pytest.raises(BidsMddError) as exc:
        discover_t1w(open_layout(tiny_bids), participant_labels=["04"])
    assert exc.value.exit_code == 18
    assert "participant label(s) not found" in str(exc.value) and "04" in str(exc.value)


def test_no_participant_is_dropped_without_a_word(tiny_bids, caplog) -> None:
    """Folders whose T1w pybids cannot take are named in one warning each with the reason;
    without validation a label with a space is not read as another participant's."""
    import shutil

    source = tiny_bids / "sub-03" / "anat" / "sub-03_T1w.nii.gz"
    placed = {"sub-0 4/anat/sub-0 4_T1w.nii.gz": "participant label '0 4' is not a BIDS label",
              "sub-é5/anat/sub-é5_T1w.nii.gz": "participant label 'é5' is not a BIDS label",
              "sub-06/sub-06_T1w.nii.gz": "not in an anat/ folder; move it",
              "sub-07/anat/sub-07_T1weighted.nii.gz": "not a BIDS T1w name"}
    for relative in placed:
        (tiny_bids / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, tiny_bids / relative)
    for validate in (True, False):
        caplog.clear()
        inputs = discover_t1w(open_layout(tiny_bids, validate=validate))
        assert sorted({i.subject for i in inputs}) == ["01", "02", "03"]
        warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert len(warned) == len(placed), warned
        for relative, reason in placed.items():
            assert any(m.startswith(f"{tiny_bids / relative}: not processed: {reason}")
                       for m in warned), (relative, warned)
    caplog.clear()  # a participant selection looks only at the selected folders
    discover_t1w(open_layout(tiny_bids), participant_labels=["01"])
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
