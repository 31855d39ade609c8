"""Static checks of what cannot be built here: the container recipes, Boutiques, the set-up."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

from bids_mdd import __version__
from bids_mdd.cli import parser as cli_parser
from bids_mdd.cli.parser import ANALYSIS_LEVELS, build_parser, positive_int
from bids_mdd.errors import ExitCode
from conftest import REPO


def test_torch_is_a_range_and_the_cpu_wheel_goes_first() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "torch>=2.13,<3" in project["dependencies"]
    assert project["requires-python"] == ">=3.11"
    assert set(project["scripts"]) == {"bids_mdd", "bids_mdd-synth", "bids_mdd-train",
                                       "bids_mdd-slurm"}
    makefile = (REPO / "Makefile").read_text()
    install = makefile.index("pip install --quiet torch==2.13.0")
    assert install < makefile.index("pip install --quiet -e")


def _env_with_torch(root: Path, torch_version: str) -> Path:
    """A venv whose only own package is a torch of that version (its metadata), seeing the test
    environment's packages through a ``.pth`` after its own: pip resolves bids_mdd's other
    requirements offline from what is installed here, and finds that torch first."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    purelib = Path(subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True, capture_output=True, text=True).stdout.strip())
    dist_info = purelib / f"torch-{torch_version}.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: torch\nVersion: {torch_version}\n")
    (dist_info / "INSTALLER").write_text("pip\n")
    (dist_info / "RECORD").write_text("")
    (purelib / "zz_test_environment.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return python


def _pip_install_editable(python: Path, report: Path) -> subprocess.CompletedProcess[str]:
    """``pip install -e .`` into that venv, as a dry run, with no index and no pip configuration
    (no file or ``PIP_*`` variable naming find-links that hold another torch)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("PIP_")}
    env |= {"PIP_CONFIG_FILE": os.devnull, "PIP_NO_INPUT": "1"}
    return subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--dry-run",
         "--no-index", "--no-build-isolation", "--quiet", "--report", str(report), "-e",
         str(REPO)], capture_output=True, text=True, env=env)


def test_an_install_keeps_the_environments_own_torch(tmp_path: Path) -> None:
    python = _env_with_torch(tmp_path / "env", "2.14.1")
    result = _pip_install_editable(python, tmp_path / "report.json")
    assert result.returncode == 0, result.stderr
    installs = json.loads((tmp_path / "report.json").read_text())["install"]
    assert [item["metadata"]["name"] for item in installs] == ["bids_mdd"]
    # below the range's floor, pip must want another torch, which no index offers here
    python = _env_with_torch(tmp_path / "old", "2.12.1")
    result = _pip_install_editable(python, tmp_path / "old.json")
    assert result.returncode != 0 and "torch" in result.stderr, result.stderr


#: The images' command: bids_mdd in isolated mode, so that a host's PYTHONPATH and user site
#: packages (Apptainer passes the host environment in) never reach it.
ENTRYPOINT = ["/opt/venv/bin/python", "-I", "-m", "bids_mdd.cli.run"]
DIGEST = re.compile(r"python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}$")


def _def_sections(text: str) -> list[tuple[str, str]]:
    """singularity.def's ``%section`` bodies in order (both stages)."""
    parts = re.split(r"^%(\w+)(?: from \w+)?[ \t]*$", text, flags=re.M)
    return list(zip(parts[1::2], parts[2::2]))


def _def_environment(text: str) -> dict[str, str]:
    body = dict(_def_sections(text))["environment"]
    return dict(re.findall(r"^\s*export (\w+)=(\S*)$", body, re.M))


def test_dockerfile() -> None:
    from dockerfile_parse import DockerfileParser

    dockerfile = DockerfileParser(str(REPO / "Dockerfile"))
    instructions = [item["instruction"] for item in dockerfile.structure]
    assert instructions.count("FROM") == 2  # build stage, then a runtime stage without pip caches
    assert all(DIGEST.match(image) for image in dockerfile.parent_images), dockerfile.parent_images
    assert instructions[-1] == "ENTRYPOINT"
    assert json.loads(dockerfile.structure[-1]["value"]) == ENTRYPOINT
    users = [item["value"] for item in dockerfile.structure if item["instruction"] == "USER"]
    assert users == ["bidsapp"]
    assert {"org.opencontainers.image.version", "org.opencontainers.image.source",
            "org.opencontainers.image.licenses", "org.opencontainers.image.title"
            } <= set(dockerfile.labels)
    environment = dockerfile.envs
    assert environment["PYTHONNOUSERSITE"] == "1" and environment["TEMPLATEFLOW_AUTOUPDATE"] == "0"
    assert environment["MPLCONFIGDIR"].startswith("/opt/cache/")
    assert not {"OMP_NUM_THREADS", "MKL_NUM_THREADS", "HOME"} & set(environment)
    for item in dockerfile.structure:
        if item["instruction"] == "COPY" and "--from" not in item["value"]:
            for path in item["value"].split()[:-1]:
                assert (REPO / path).exists(), path
    assert {".venv", ".git"} <= set((REPO / ".dockerignore").read_text().split())


def test_singularity_def_matches_the_dockerfile() -> None:
    from dockerfile_parse import DockerfileParser

    text = (REPO / "singularity.def").read_text()
    dockerfile = DockerfileParser(str(REPO / "Dockerfile"))
    sections = _def_sections(text)
    names = [name for name, _ in sections]
    assert {"help", "test", "runscript", "labels", "environment"} <= set(names)
    assert dict(sections)["runscript"].strip() == f'exec {" ".join(ENTRYPOINT)} "$@"'
    assert set(re.findall(r"^From: (\S+)$", text, re.M)) == set(dockerfile.parent_images)
    environment = _def_environment(text)
    docker_environment = dict(dockerfile.envs)
    assert environment.pop("BIDS_MDD_CONTAINER_TYPE") == "singularity"
    assert docker_environment.pop("BIDS_MDD_CONTAINER_TYPE") == "docker"
    assert environment.pop("PATH") == "/opt/venv/bin:$PATH"
    assert docker_environment.pop("PATH") == "/opt/venv/bin:"  # $PATH, as the parser reads it
    assert environment == docker_environment
    # the same install steps, and every file the build copies exists
    for script in ("docker/install-python-packages.sh", "docker/install-templates.sh"):
        assert f"/build/{script}" in text and f"/build/{script}" in dockerfile.content
    for name, body in sections:
        if name == "files":
            for line in filter(str.strip, body.splitlines()):
                source = line.split()[0]
                assert source.startswith("/opt/") or (REPO / source).exists(), line


def test_one_version_and_a_lock_that_satisfies_the_project() -> None:
    from packaging.requirements import Requirement

    version = subprocess.run([REPO / "tools" / "version"], capture_output=True, text=True,
                             check=True).stdout.strip()
    assert version == __version__
    assert __version__ not in (REPO / "Dockerfile").read_text()
    assert __version__ not in (REPO / "singularity.def").read_text()
    pins = {}
    for line in (REPO / "docker" / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, pinned = line.split("==")
            pins[name.lower().replace("_", "-")] = pinned
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for dependency in map(Requirement, project["dependencies"]):
        name = dependency.name.lower().replace("_", "-")
        assert name in pins, f"{name}: rerun tools/lock-image-requirements"
        assert dependency.specifier.contains(pins[name]), (name, pins[name])


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


def test_boutiques_outputs_are_the_registry_names() -> None:
    """Every participant-level image and table, by the name the sink gives it, and the group
    report; outputs of one level only are optional (bosh checks the others exist)."""
    from bids_mdd.bids.names import derivative_path
    from bids_mdd.bids.outputs import OUTPUTS, PREDICTIONS

    outputs = {o["id"]: o for o in json.loads((REPO / "boutiques.json").read_text())[
        "output-files"]}
    expected = {name: entities for name, entities in OUTPUTS.items()
                if not name.startswith("fig_")}
    expected["predictions"] = PREDICTIONS
    for name, entities in expected.items():
        template = derivative_path(Path("[OUTPUT_DIR]"), subject="*", **entities)
        assert outputs[name]["path-template"] == str(template), name
        assert outputs[name]["optional"] is True and "participant level" in outputs[name]["name"]
    assert outputs["group_report"]["path-template"] == "[OUTPUT_DIR]/group/group.html"
    required = [o["id"] for o in outputs.values() if not o.get("optional")]
    assert required == ["dataset_description"]


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


def test_build_scripts_parse() -> None:
    """The scripts CI and the image builds run (they run for real in tools/container-test)."""
    for shell, script in (("bash", "tools/container-test"), ("bash", ".ci/run"),
                          ("bash", "brainlife/main"),
                          ("bash", "tools/lock-image-requirements"), ("sh", "tools/version"),
                          ("sh", "docker/install-python-packages.sh"),
                          ("sh", "docker/install-templates.sh")):
        checked = subprocess.run([shell, "-n", REPO / script], capture_output=True, text=True)
        assert checked.returncode == 0, (script, checked.stderr)
        assert (REPO / script).stat().st_mode & 0o111, f"{script} is not executable"
