"""Read-only cache folders (Apptainer images): a writable copy is used, the prebuilt cache kept."""

from __future__ import annotations

import os

import pytest

from bids_mdd.cli.caches import ensure_writable_caches

pytestmark = pytest.mark.unit  # make test-fast


def test_read_only_cache_is_copied_once(tmp_path, monkeypatch) -> None:
    prebuilt = tmp_path / "image" / "matplotlib"
    prebuilt.mkdir(parents=True)
    (prebuilt / "fontlist-v390.json").write_text('{"fonts": 1}')
    # read-only as in a SIF image (root, who runs CI, may write anywhere: asked, not chmod-ed)
    writable = os.access
    monkeypatch.setattr("bids_mdd.cli.caches.os.access",
                        lambda path, mode: str(path) != str(prebuilt) and writable(path, mode))
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    environ = {"MPLCONFIGDIR": str(prebuilt), "NIPYPE_CONFIG_DIR": str(tmp_path)}
    changed = ensure_writable_caches(environ)
    copy = tmp_path / "tmp" / f"bids_mdd-{os.getuid()}" / "mplconfigdir"
    assert changed == {"MPLCONFIGDIR": str(copy)} and environ["MPLCONFIGDIR"] == str(copy)
    assert (copy / "fontlist-v390.json").read_text() == '{"fonts": 1}'
    assert environ["NIPYPE_CONFIG_DIR"] == str(tmp_path)  # writable: left alone
    assert ensure_writable_caches({"MPLCONFIGDIR": str(prebuilt)}) == {"MPLCONFIGDIR": str(copy)}


def test_unset_or_writable_caches_are_left_alone(tmp_path) -> None:
    environ = {"TORCH_HOME": str(tmp_path)}
    assert ensure_writable_caches(environ) == {} and environ == {"TORCH_HOME": str(tmp_path)}
