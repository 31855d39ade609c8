"""The documentation site: it builds with warnings as errors, its usage page lists every option
of the four commands, its outputs page every entry of the outputs registry, its FAQ every exit
code; the README fits on a screen; no page or module cites the project's issue numbers."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from bids_mdd.bids.names import relative_path
from bids_mdd.bids.outputs import OUTPUTS
from bids_mdd.cli import parser as run_cli
from bids_mdd.cli import slurm as slurm_cli
from bids_mdd.cli import synth as synth_cli
from bids_mdd.cli import train as train_cli
from bids_mdd.errors import EXIT_CODE_HELP, ExitCode
from conftest import REPO

pytestmark = pytest.mark.unit  # make test-fast

DOCS = REPO / "docs"


class _Text(HTMLParser):
    """The visible text of a page (what a reader sees, not the markup)."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def page_text(html: Path) -> str:
    reader = _Text()
    reader.feed(html.read_text())
    return "".join(reader.parts)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site as ``make docs`` builds it: fresh, warnings as errors."""
    out = tmp_path_factory.mktemp("site")
    built = subprocess.run([sys.executable, "-m", "sphinx", "-E", "-W", "--keep-going", "-q",
                            "-b", "html", str(DOCS), str(out)],
                           capture_output=True, text=True, cwd=REPO, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    return out


def _options(parser: argparse.ArgumentParser) -> set[str]:
    """Every option string but argparse's own -h/--help (the page shows it in the usage)."""
    return {option for action in parser._actions for option in action.option_strings
            if not isinstance(action, argparse._HelpAction)}


PARSERS = {"bids_mdd": run_cli.build_parser, "bids_mdd-train": train_cli.build_parser,
           "bids_mdd-train prepare": train_cli.build_prepare_parser,
           "bids_mdd-synth": synth_cli.build_parser, "bids_mdd-slurm": slurm_cli.build_parser}


def test_usage_page_lists_every_option_of_the_four_commands(site: Path) -> None:
    text = page_text(site / "usage.html")
    for name, build in PARSERS.items():
        options = _options(build())
        assert len(options) > 3, name
        # each command's section, so that an option of one command cannot stand in for another's
        start = text.index(f"usage: {name} ")
        section = text[start:]
        for other in PARSERS:
            end = section.find(f"usage: {other} ", 1)
            if other != name and end > 0:
                section = section[:end]
        missing = sorted(option for option in options if option not in section)
        assert not missing, (name, missing)


def test_outputs_page_lists_every_registry_entry(site: Path) -> None:
    text = page_text(site / "outputs.html")
    for role, entities in OUTPUTS.items():
        assert f"{role}:" in text, role
        assert relative_path(subject="01", **{"extension": ".nii.gz", **entities}) in text, role
    assert "sub-01/anat/sub-01_predictions.tsv" in text
    assert "desc-Anhedonia_attention.nii.gz" in text


def test_faq_lists_every_exit_code_with_what_to_do(site: Path) -> None:
    assert set(EXIT_CODE_HELP) == set(ExitCode)
    text = page_text(site / "faq.html")
    for code in ExitCode:
        meaning, fix = EXIT_CODE_HELP[code]
        assert code.name in text and meaning[:40] in text and fix[:30] in text, code


def test_methods_page_prints_the_group_reports_paragraph(site: Path) -> None:
    text = page_text(site / "methods.html")
    assert "Group analyses were run with bids_mdd" in text
    assert "5000 permutations, TFCE" in text  # the example's options reached the real function


def test_readme_fits_on_a_screen_and_links_into_the_site() -> None:
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (REPO / link).is_file(), link


ISSUE_REFERENCE = re.compile(r"\bissues?\s*#?\d+", re.I)


def test_no_page_or_module_cites_issue_numbers() -> None:
    files = [REPO / "README.md", *DOCS.rglob("*.md"), *DOCS.rglob("*.py"),
             *(REPO / "bids_mdd").rglob("*.py")]
    cited = [f"{path.relative_to(REPO)}: {match.group(0)}" for path in files
             if "_build" not in path.parts
             for match in ISSUE_REFERENCE.finditer(path.read_text())]
    assert not cited, cited
