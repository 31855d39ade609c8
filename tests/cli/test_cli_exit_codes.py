"""Every BIDS-Apps exit code of ``bids_mdd``, each triggered by a real bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bids_mdd import __version__
from bids_mdd.cli.run import main
from conftest import make_tiny_bids

pytestmark = pytest.mark.unit  # make test-fast


@pytest.fixture
def no_preproc(monkeypatch) -> list:
    """Replace preprocessing (tested in test_preproc_*) by a recorder of what it was given, and
    the model step (tested in test_inference) by nothing."""
    calls: list = []
    monkeypatch.setattr("bids_mdd.participant.runner.preprocess",
                        lambda inputs, *args, **kwargs: calls.append(inputs) or [])
    monkeypatch.setattr("bids_mdd.participant.runner.apply_models", lambda *args, **kwargs: [])
    return calls


def run(capsys: pytest.CaptureFixture, *argv: object) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def test_version_console_script() -> None:
    exe = Path(sys.executable).with_name("bids_mdd")
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"bids_mdd {__version__}"


def test_ok_participant_writes_dataset_description(tiny_bids, tmp_path, capsys,
                                                   no_preproc) -> None:
    out = tmp_path / "out"
    before = sorted(tiny_bids.rglob("*"))
    code, err = run(capsys, tiny_bids, out, "participant", "-w", tmp_path / "work")
    assert code == 0, err
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert description["GeneratedBy"][0]["Name"] == "bids_mdd"
    assert sorted(tiny_bids.rglob("*")) == before, "the input dataset was written to"
    assert [len(inputs) for inputs in no_preproc] == [6]


def test_unknown_analysis_level_exits_17(tiny_bids, tmp_path, capsys) -> None:
    code, err = run(capsys, tiny_bids, tmp_path / "out", "subject")
    assert code == 17
    assert "unknown analysis level 'subject'" in err


def test_missing_bids_dir_exits_66(tmp_path, capsys) -> None:
    code, err = run(capsys, tmp_path / "nowhere", tmp_path / "out", "participant")
    assert code == 66
    assert "nowhere does not exist" in err


@pytest.mark.parametrize("where", ["same", "inside", "derivatives"])
def test_output_in_bids_dir_but_not_under_its_derivatives_exits_64(tiny_bids, capsys,
                                                                    where) -> None:
    """BIDS_DIR itself, a folder of it outside derivatives/, and derivatives/ itself are
    refused with the layout the BIDS specification suggests; nothing is created."""
    out = {"same": tiny_bids, "inside": tiny_bids / "out",
           "derivatives": tiny_bids / "derivatives"}[where]
    code, err = run(capsys, tiny_bids, out, "participant")
    assert code == 64 and len(err.strip().splitlines()) == 1
    assert f"write the derivatives to {tiny_bids}/derivatives/bids_mdd-{__version__}" in err
    assert not (tiny_bids / "out").exists() and not (tiny_bids / "derivatives").exists()


@pytest.mark.parametrize("work", ["", "work", "sub-01/work"])
def test_work_dir_in_output_dir_exits_64_unless_hidden(tiny_bids, tmp_path, capsys, no_preproc,
                                                      work) -> None:
    """nipype's files in OUTPUT_DIR would be derivatives the BIDS validator refuses; a hidden
    folder there (.work), which the validator skips, is taken."""
    out = tmp_path / "out"
    code, err = run(capsys, tiny_bids, out, "participant", "-w", out / work,
                    "--skip-bids-validation")
    assert code == 64 and err.strip().splitlines() == [
        f"bids_mdd: error: work_dir {out / work} is inside output_dir {out}: its nipype files "
        "would become part of the derivatives, which the BIDS validator refuses; choose a "
        f"folder outside it, or a hidden one ({out / '.work'})"]
    assert not out.exists() and not no_preproc
    code, err = run(capsys, tiny_bids, out, "participant", "-w", out / ".work",
                    "--skip-bids-validation")
    assert code == 0 and no_preproc, err


@pytest.mark.parametrize("inside", ["work", "derivatives/work"])
def test_work_dir_in_bids_dir_exits_64(tiny_bids, tmp_path, capsys, inside) -> None:
    code, err = run(capsys, tiny_bids, tiny_bids / "derivatives" / "bids_mdd", "participant",
                    "-w", tiny_bids / inside)
    assert code == 64 and len(err.strip().splitlines()) == 1
    assert f"work_dir {tiny_bids / inside} is inside bids_dir" in err
    assert "choose a folder outside the input dataset" in err
    assert not (tiny_bids / "derivatives").exists()


@pytest.mark.parametrize("extra", [[], ["out", "participant", "--nprocs", "0"],
                                   ["out", "participant", "--device", "tpu"]])
def test_usage_error_exits_64(tiny_bids, capsys, extra) -> None:
    with pytest.raises(SystemExit) as exc:
        main([str(tiny_bids), *extra])
    assert exc.value.code == 64
    assert "bids_mdd: error:" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["-1", "2147483647", "99999999999999999999"])
def test_a_seed_some_consumer_cannot_take_exits_64_in_every_command(tiny_bids, tmp_path, capsys,
                                                                    value) -> None:
    """-1 would become antsRegistration's 0 ("random"), breaking --deterministic; a seed
    above ANTs' 32-bit range, or torch's, would fail mid-run with a traceback."""
    from bids_mdd.cli.synth import main as synth_main
    from bids_mdd.cli.train import main as train_main

    commands = {"bids_mdd": lambda: main([str(tiny_bids), str(tmp_path / "o"), "participant",
                                          "--seed", value]),
                "bids_mdd-train": lambda: train_main([str(tmp_path), str(tmp_path / "m"),
                                                      "--participants", str(tmp_path / "p.tsv"),
                                                      "--seed", value]),
                "bids_mdd-synth": lambda: synth_main([str(tmp_path / "s"), "--seed", value])}
    for name, command in commands.items():
        with pytest.raises(SystemExit) as exc:
            command()
        err = capsys.readouterr().err.strip().splitlines()
        assert exc.value.code == 64, name
        option = "--random-seed/--seed" if name == "bids_mdd" else "--seed"
        assert err[-1] == (f"{name}: error: argument {option}: must be from 0 to 2147483646, "
                           f"got {value}"), err
    assert not (tmp_path / "o").exists() and not (tmp_path / "s").exists()


def test_an_unreadable_home_is_replaced_with_one_warning(tiny_bids, tmp_path) -> None:
    """pybids reads ~/pybids_config.json at import: an unsearchable HOME was a traceback
    before even --help. Run as a user (root reads anything) without the capabilities that
    bypass permissions."""
    import os

    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0)
    prefix = (["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]
              if os.geteuid() == 0 else [])
    env = {**os.environ, "HOME": str(home)}
    warning = f"warning: HOME={home} cannot be read; the libraries' user settings and caches use "
    for module, args, code in (
            ("bids_mdd.cli.run", ["--help"], 0), ("bids_mdd.cli.train", ["--help"], 0),
            ("bids_mdd.cli.run", [str(tiny_bids), str(tmp_path / "out"), "participant",
                                  "--participant-label", "nosuch", "--skip-bids-validation"], 18)):
        done = subprocess.run([*prefix, sys.executable, "-m", module, *args], env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == code, done.stderr
        assert "Traceback" not in done.stderr, done.stderr
        assert done.stderr.splitlines()[0].startswith(f"bids_mdd: {warning}"), done.stderr
    home.chmod(0o700)


def test_output_not_creatable_exits_73(tiny_bids, tmp_path, capsys) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, err = run(capsys, tiny_bids, blocker / "out", "participant")
    assert code == 73
    assert "cannot create output_dir" in err


@pytest.mark.parametrize("skip", ["--skip-bids-validation", "--skip_bids_validation",
                                  "--skip_bids_validator"])
def test_no_dataset_description_exits_16_unless_skipped(tiny_bids, tmp_path, capsys,
                                                        no_preproc, skip) -> None:
    """Skipped in any spelling: ours, fMRIPrep's, the BIDS-Apps examples' (with their
    --participant_label)."""
    (tiny_bids / "dataset_description.json").unlink()
    code, err = run(capsys, tiny_bids, tmp_path / "out", "participant")
    assert code == 16
    assert "dataset_description.json is missing" in err
    code, err = run(capsys, tiny_bids, tmp_path / "out", "participant", "--participant_label",
                    "01", skip)
    assert code == 0, err
    assert {t1w.subject for t1w in no_preproc[-1]} == {"01"}


def test_no_t1w_exits_16(tmp_path, capsys) -> None:
    bids = make_tiny_bids(tmp_path / "bids", {})
    (bids / "sub-01" / "func").mkdir(parents=True)
    code, err = run(capsys, bids, tmp_path / "out", "participant")
    assert code == 16
    assert "no sub-*/[ses-*/]anat/*_T1w" in err


def test_unknown_participant_labels_exit_18_naming_them(tiny_bids, tmp_path, capsys) -> None:
    code, err = run(capsys, tiny_bids, tmp_path / "out", "participant",
                    "--participant-label", "01", "sub-07", "99")
    assert code == 18
    assert "07, 99" in err and "available: 01, 02, 03" in err


def test_unknown_session_exits_18(tiny_bids, tmp_path, capsys) -> None:
    code, err = run(capsys, tiny_bids, tmp_path / "out", "participant", "--session-label", "9")
    assert code == 18
    assert "session label(s) not found" in err


def test_filter_selecting_nothing_exits_18(tiny_bids, tmp_path, capsys) -> None:
    filters = tmp_path / "filters.json"
    filters.write_text(json.dumps({"t1w": {"acquisition": "mprage"}}))
    code, err = run(capsys, tiny_bids, tmp_path / "out", "participant",
                    "--bids-filter-file", filters)
    assert code == 18
    assert "no T1w image" in err and "mprage" in err


def test_bad_filter_file(tiny_bids, tmp_path, capsys) -> None:
    filters = tmp_path / "filters.json"
    filters.write_text("{not json")
    code, err = run(capsys, tiny_bids, tmp_path / "out", "participant",
                    "--bids-filter-file", filters)
    assert code == 64
    assert "is not valid JSON" in err
    code, err = run(capsys, tiny_bids, tmp_path / "out", "participant",
                    "--bids-filter-file", tmp_path / "absent.json")
    assert code == 66


def test_exit_code_through_console_script(tmp_path) -> None:
    exe = Path(sys.executable).with_name("bids_mdd")
    out = subprocess.run([str(exe), str(tmp_path / "missing"), str(tmp_path / "out"), "group"],
                         capture_output=True, text=True)
    assert out.returncode == 66
    assert out.stderr.strip().splitlines()[-1].startswith("bids_mdd: error:")
