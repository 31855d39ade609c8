"""The finished-T1w record: a rerun skips a T1w only when what made its derivatives and the
derivatives themselves are unchanged."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest

from bids_mdd.bids.discovery import T1wInput
from bids_mdd.participant.completion import (
    derivative_files,
    is_finished,
    made_from,
    record_finished,
    record_path,
)
from bids_mdd.preproc.workflow import PreprocOptions

pytestmark = pytest.mark.unit  # make test-fast


def test_a_finished_record_holds_only_while_inputs_options_and_outputs_are_unchanged(
        templateflow_home, tmp_path) -> None:
    bids, out, work = tmp_path / "bids", tmp_path / "out", tmp_path / "work"
    t1w_path = bids / "sub-01" / "anat" / "sub-01_T1w.nii.gz"
    t1w_path.parent.mkdir(parents=True)
    t1w_path.write_bytes(b"scan")
    t1w = T1wInput(t1w_path, "01")
    options = PreprocOptions()
    files = derivative_files(out, t1w)
    assert len(files) > 10 and all("sub-01" in path.name for path in files)
    inputs = made_from(t1w, bids, out, options)
    record_finished(work, t1w, inputs, out)
    assert not record_path(work, t1w).exists()  # nothing written yet: no record
    for path in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"derivative")
    record_finished(work, t1w, inputs, out)
    assert is_finished(work, t1w, made_from(t1w, bids, out, options), out)
    # other threads are not part of it; other options are
    assert is_finished(work, t1w, made_from(t1w, bids, out, replace(options, omp_nthreads=4)),
                       out)
    assert not is_finished(work, t1w, made_from(t1w, bids, out, replace(options, seed=1)), out)
    assert not is_finished(work, t1w, made_from(t1w, bids, tmp_path / "other", options), out)
    # a derivative rewritten since (same size, another time) and an input touched since
    stamp = files[0].stat().st_mtime_ns
    os.utime(files[0], ns=(stamp + 10**9, stamp + 10**9))
    assert not is_finished(work, t1w, inputs, out)
    os.utime(files[0], ns=(stamp, stamp))
    assert is_finished(work, t1w, inputs, out)
    os.utime(t1w_path, ns=(stamp + 10**9, stamp + 10**9))
    assert not is_finished(work, t1w, made_from(t1w, bids, out, options), out)
    files[1].unlink()
    assert not is_finished(work, t1w, inputs, out)
    record_path(work, t1w).write_text("{not json")
    assert not is_finished(work, t1w, inputs, out)
