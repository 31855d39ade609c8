"""Static checks of what cannot be built here: the container recipes, Boutiques, the set-up."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from bids_mdd import __version__
from bids_mdd.cli import parser as cli_parser
from bids_mdd.cli.parser import ANALYSIS_LEVELS, build_parser, positive_int
from bids_mdd.errors import ExitCode
from conftest import REPO


def test_torch_is_pinned_to_the_cpu_wheel_release() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "torch==2.13.0" in project["dependencies"]
    assert project["requires-python"] == ">=3.11"
    assert set(project["scripts"]) == {"bids_mdd", "bids_mdd-synth", "bids_mdd-train"}
    makefile = (REPO / "Makefile").read_text()
    install = makefile.index("pip install --quiet torch==2.13.0")
    assert install < makefile.index("pip install --quiet -e")


def test_dockerfile() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.1[1-9]", text, re.M)
    assert "torch==2.13.0" in text and 'ENTRYPOINT ["bids_mdd"]' in text
    assert "TEMPLATEFLOW_AUTOUPDATE=0" in text and "BIDS_MDD_CONTAINER_TYPE=docker" in text
    for source in re.findall(r"^COPY (.+) /src", text, re.M):
        for path in source.split():
            assert (REPO / path).exists(), path
    assert ".venv" in (REPO / ".dockerignore").read_text().split()


def test_singularity_def() -> None:
    text = (REPO / "singularity.def").read_text()
    assert text.count("Bootstrap: docker") == 1 and "From: python:3.11" in text
    assert 'exec bids_mdd "$@"' in text and "BIDS_MDD_CONTAINER_TYPE=singularity" in text
    files = text.split("%files")[1].split("%")[0].split("\n")
    for line in filter(str.strip, files):
        assert (REPO / line.split()[0]).exists(), line


def _parser_options() -> dict[str, argparse.Action]:
    return {a.dest: a for a in build_parser()._actions
            if not isinstance(a, (argparse._HelpAction, argparse._VersionAction))}


#: The descriptor's bounds of each bounded argparse type.
BOUNDS = {positive_int: {"minimum": 1}, cli_parser._non_negative_int: {"minimum": 0},
          cli_parser.positive_float: {"minimum": 0, "exclusive-minimum": True},
          cli_parser._fraction: {"minimum": 0, "exclusive-minimum": True, "maximum": 1}}


def test_boutiques_matches_the_parser_both_ways() -> None:
    descriptor = json.loads((REPO / "boutiques.json").read_text())
    assert descriptor["tool-version"] == __version__
    keys = re.findall(r"\[[A-Z_]+\]", descriptor["command-line"])
    inputs = {i["id"]: i for i in descriptor["inputs"]}
    assert sorted(keys) == sorted(i["value-key"] for i in inputs.values())
    actions = _parser_options()
    assert sorted(inputs) == sorted(actions)  # every option described, nothing else
    for name, action in actions.items():
        item = inputs[name]
        assert item.get("command-line-flag") == next(
            (s for s in action.option_strings if s.startswith("--")), None), name
        assert item.get("list", False) == (action.nargs in ("+", "*")), name
        if action.choices:
            assert item["value-choices"] == list(action.choices), name
        if action.type is Path:  # so that bosh mounts it
            assert item["type"] == "File", name
        if action.type is positive_int:
            assert item["minimum"] == 1 and item["integer"], name
        bounds = {key: item[key] for key in ("minimum", "maximum", "exclusive-minimum",
                                             "exclusive-maximum") if key in item}
        assert bounds == BOUNDS.get(action.type, {}), name
        if "default-value" in item:
            assert item["default-value"] == action.default, name
        elif item["type"] != "Flag" and action.option_strings:
            assert action.default is None or isinstance(action.default, Path), name
    assert inputs["analysis_level"]["value-choices"] == list(ANALYSIS_LEVELS)
    assert inputs["mem_gb"]["minimum"] == 0 and inputs["mem_gb"]["exclusive-minimum"]
    codes = {e["code"] for e in descriptor["error-codes"]}
    assert codes == {int(c) for c in ExitCode if c != ExitCode.OK}


def test_bosh_validates_and_simulates_a_command_the_parser_accepts() -> None:
    bosh = Path(sys.executable).with_name("bosh")
    if not bosh.exists():
        pytest.skip("boutiques is not installed (pip install -e '.[test]')")
    descriptor, example = REPO / "boutiques.json", REPO / "boutiques" / "example_invocation.json"
    checked = subprocess.run([bosh, "validate", descriptor], capture_output=True, text=True)
    assert checked.returncode == 0 and checked.stdout.strip().endswith("OK"), checked.stderr
    simulated = subprocess.run([bosh, "exec", "simulate", descriptor, "-i", example],
                               capture_output=True, text=True)
    assert simulated.returncode == 0, simulated.stderr
    command = simulated.stdout.split("Generated Command:")[1].split()
    assert command[0] == "bids_mdd"
    args = build_parser().parse_args(command[1:])
    invocation = json.loads(example.read_text())
    assert args.participant_label == invocation["participant_label"]
    assert (args.nprocs, args.omp_nthreads, args.mem_gb, args.seed) == (4, 1, 16.0, 0)
    assert args.work_dir == Path(invocation["work_dir"])


def test_readme_documents_the_two_commands_and_exit_codes() -> None:
    readme = (REPO / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    for code in ExitCode:
        if code:
            assert f"`{int(code)}`" in readme, code
    assert "TEMPLATEFLOW_HOME" in readme
