"""Static checks of what cannot be built here: the container recipes, Boutiques, the set-up."""

from __future__ import annotations

import json
import re
import tomllib

from bids_mdd import __version__
from bids_mdd.cli.parser import ANALYSIS_LEVELS, build_parser
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


def test_boutiques_matches_the_parser() -> None:
    descriptor = json.loads((REPO / "boutiques.json").read_text())
    assert descriptor["tool-version"] == __version__
    keys = re.findall(r"\[[A-Z_]+\]", descriptor["command-line"])
    inputs = {i["value-key"]: i for i in descriptor["inputs"]}
    assert sorted(keys) == sorted(inputs)
    actions = {s: a for a in build_parser()._actions for s in a.option_strings}
    for item in inputs.values():
        if "command-line-flag" in item:
            action = actions[item["command-line-flag"]]
            assert item.get("list", False) == (action.nargs in ("+", "*")), item["id"]
    assert inputs["[ANALYSIS_LEVEL]"]["value-choices"] == list(ANALYSIS_LEVELS)
    codes = {e["code"] for e in descriptor["error-codes"]}
    assert codes == {int(c) for c in ExitCode if c != ExitCode.OK}


def test_readme_documents_the_two_commands_and_exit_codes() -> None:
    readme = (REPO / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    for code in ExitCode:
        if code:
            assert f"`{int(code)}`" in readme, code
    assert "TEMPLATEFLOW_HOME" in readme
