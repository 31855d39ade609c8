"""Directives that render bids_mdd's own registries when the documentation is built: the
outputs registry, the exit codes with what to do about each, and the group report's methods
paragraph. The pages therefore cannot drift from the code (tests compare them as well)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from docutils import nodes
from docutils.parsers.rst import Directive
from docutils.statemachine import StringList
from sphinx.application import Sphinx

from bids_mdd.bids.names import relative_path
from bids_mdd.bids.outputs import (
    DESCRIPTIONS,
    OUTPUTS,
    PREDICTIONS,
    attention_entities,
    attention_figure_entities,
    image_metadata,
)
from bids_mdd.errors import EXIT_CODE_HELP, ExitCode
from bids_mdd.group.options import GroupOptions
from bids_mdd.group.report import methods_paragraph
from bids_mdd.group.results import AttentionSummary, GlmSummary, GroupResults
from bids_mdd.spaces.grids import CLASSIFIER_GRID, DFRN_GRID

#: The keys every image sidecar carries besides those of its kind (``bids.derivatives``).
PROVENANCE_KEYS = ("GeneratedBy", "SoftwareVersions", "Sources", "Parameters")

#: What the registry's outputs without an image sidecar are (images: ``DESCRIPTIONS``).
OTHER_DESCRIPTIONS = {
    "xfm": "The composite ANTs transform from the T1w to the template (affine and SyN warp)",
    "qc": "QC metrics: TIV and tissue volumes, tissue fractions, registration quality, flags",
    "fig_segmentation": "Brain mask and tissue contours on the native T1w (the report's figure)",
    "fig_registration": "The MNI-space T1w under the template's GM/WM boundary (the report's "
                        "figure)",
}


def _cell(text: str) -> str:
    """Table-cell text: one line, ``<`` and ``*`` escaped outside code (Markdown takes
    ``<label>`` for HTML and ``sub-*/...*`` for emphasis)."""
    pieces = text.replace("\n", " ").split("`")
    return "`".join(piece if i % 2 else piece.replace("<", "\\<").replace("*", "\\*")
                    for i, piece in enumerate(pieces))


def _list_table(header: list[str], rows: list[list[str]], widths: str = "auto") -> list[str]:
    """A MyST ``list-table`` (the pages are Markdown: nested content is parsed as MyST)."""
    lines = ["```{list-table}", ":header-rows: 1", f":widths: {widths}", ""]
    for row in [header, *rows]:
        lines.append(f"* - {_cell(row[0]) or ' '}")
        lines.extend(f"  - {_cell(cell) or ' '}" for cell in row[1:])
    return [*lines, "```"]


class _MystDirective(Directive):
    """A directive whose body is MyST Markdown made by :meth:`markdown`."""

    def markdown(self) -> list[str]:  # pragma: no cover - overridden
        raise NotImplementedError

    def run(self) -> list[nodes.Node]:
        holder = nodes.section()
        holder.document = self.state.document
        self.state.nested_parse(StringList(self.markdown(), source=type(self).__name__),
                                self.content_offset, holder)
        return holder.children


def _entities_text(entities: dict[str, Any]) -> str:
    return ", ".join(f"`{key}-{value}`" if key not in ("suffix", "extension", "datatype")
                     else f"{key} `{value}`" for key, value in entities.items())


def output_rows() -> list[tuple[str, str, dict[str, Any], str, list[str]]]:
    """(registry role, example path for sub-01, entities, description, sidecar keys) of every
    participant-level output the registry names, attention maps for an example target."""
    rows = []
    for role, entities in OUTPUTS.items():
        path = relative_path(subject="01", **{"extension": ".nii.gz", **entities})
        keys = (list(image_metadata(role, "bids:raw:sub-01/anat/sub-01_T1w.nii.gz", False))
                + list(PROVENANCE_KEYS) if role in DESCRIPTIONS else [])
        rows.append((role, path, entities,
                     DESCRIPTIONS.get(role) or OTHER_DESCRIPTIONS[role], keys))
    rows.append(("predictions", relative_path(subject="01", **PREDICTIONS), PREDICTIONS,
                 "One row per model applied to the T1w (JSON sidecar: the models, their cards "
                 "and the Fingerprint)", []))
    for grid, target in ((DFRN_GRID, "Anhedonia"), (CLASSIFIER_GRID, "MDD")):
        entities = attention_entities(target, grid.res)
        rows.append((f"attention ({target})",
                     relative_path(subject="01", extension=".nii.gz", **entities), entities,
                     f"Attention map of the model predicting {target}, on its input grid", []))
    figure = attention_figure_entities("Anhedonia")
    rows.append(("attention figure (Anhedonia)", relative_path(subject="01", **figure), figure,
                 "The map's top 1 % over the participant's MNI-space T1w", []))
    return rows


class OutputsTable(_MystDirective):
    """``.. bids-mdd-outputs::``: the outputs registry as a table."""

    def markdown(self) -> list[str]:
        rows = [[f"`{path}`", f"`{role}`: {_entities_text(entities)}",
                 f"{description}. Sidecar: {', '.join(f'`{key}`' for key in keys)}" if keys
                 else description]
                for role, path, entities, description, keys in output_rows()]
        return _list_table(["file (sub-01)", "registry role: entities", "what it is"], rows,
                           "34 28 38")


class ExitCodes(_MystDirective):
    """``.. bids-mdd-exit-codes::``: every exit code, what it means and what to do."""

    def markdown(self) -> list[str]:
        rows = [[f"`{int(code)}`", code.name, *EXIT_CODE_HELP[code]] for code in ExitCode]
        return _list_table(["code", "name", "meaning", "what to do"], rows, "6 16 39 39")


def example_methods() -> str:
    """The group report's methods paragraph for an example run (60 participants, default
    options, TFCE with 5000 permutations, attention maps and metrics present)."""
    glm = GlmSummary(design=["intercept", "MDD", "age", "sex[M]", "TIV"],
                     contrast=[0.0, 1.0, 0.0, 0.0, 0.0], n_participants=60, n_mdd=30, n_hc=30,
                     degrees_of_freedom=55, gm_threshold=0.2, mask_voxels=253114, fdr_q=0.05,
                     fdr_threshold_t=4.12, label_column="group", caption="")
    attention = AttentionSummary(60, pd.DataFrame(), Path("attention.svg"))
    results = GroupResults(n_selected=60, missing=pd.DataFrame(), qc=pd.DataFrame(), glm=glm,
                           attention={"Anhedonia": attention},
                           metrics=pd.DataFrame({"metric": ["auc"], "value": [0.5]}))
    return methods_paragraph(results, GroupOptions(permutations=5000))


class MethodsExample(_MystDirective):
    """``.. bids-mdd-methods-example::``: the group methods text for an example run."""

    def markdown(self) -> list[str]:
        return [example_methods().replace("*", "\\*")]


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("bids-mdd-outputs", OutputsTable)
    app.add_directive("bids-mdd-exit-codes", ExitCodes)
    app.add_directive("bids-mdd-methods-example", MethodsExample)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
