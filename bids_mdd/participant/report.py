"""The participant HTML report: QC metrics, flags, figures and predictions of each T1w image."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path

import pandas as pd

from bids_mdd import __version__
from bids_mdd.bids.atomic import write_text
from bids_mdd.bids.discovery import T1wInput
from bids_mdd.bids.names import derivative_path, sidecar_path
from bids_mdd.bids.outputs import T1wOutputs
from bids_mdd.html_page import page
from bids_mdd.models.card import NO_CARD, cautions, evidence_line
from bids_mdd.preproc.qc import gate_failures

_METRICS = (("tiv_ml", "TIV (mL)"), ("gm_ml", "GM (mL)"), ("wm_ml", "WM (mL)"),
            ("csf_ml", "CSF (mL)"), ("gm_fraction", "GM / TIV"), ("wm_fraction", "WM / TIV"),
            ("csf_fraction", "CSF / TIV"), ("tissue_collapse", "tissue collapse"),
            ("template_ncc", "correlation with template"),
            ("template_mask_dice", "brain-mask Dice with template"))


def _section(output_dir: Path, t1w: T1wInput) -> str:
    outputs = t1w.outputs(output_dir)
    title = " ".join(f"{k}-{v}" for k, v in outputs.entities.items())
    qc_path = outputs.output("qc")
    if not qc_path.is_file():
        return f"<h2>{escape(title)}</h2><p class='flag'>not preprocessed (see logs/)</p>"
    metrics = json.loads(qc_path.read_text(encoding="utf-8"))
    rows = "".join(f"<tr><th>{escape(label)}</th><td>{metrics.get(key)}</td></tr>"
                   for key, label in _METRICS)
    flags = "".join(f"<li class='flag'>{escape(flag)}</li>" for flag in metrics["flags"])
    sloppy = metrics.get("Parameters", {}).get("Sloppy")
    parts = [f"<h2>{escape(title)}</h2>",
             f"<p>Source: <code>{escape(', '.join(metrics.get('Sources', [])))}</code></p>"]
    if sloppy:
        parts.append("<p class='warn'>Preprocessed with --sloppy (coarse, for tests): "
                     "do not analyse these outputs.</p>")
    gate = gate_failures(metrics)
    if gate:
        parts.append(f"<p class='flag'>QC gate failed ({escape('; '.join(gate))}): the group "
                     "level leaves this image out unless --include-qc-failures.</p>")
    parts.append(f"<table>{rows}</table>")
    parts.append(f"<ul>{flags}</ul>" if flags else "<p>No QC flag.</p>")
    for name, caption in (("fig_segmentation", "Segmentation"),
                          ("fig_registration", "Registration to MNI152NLin2009cAsym")):
        figure = outputs.output(name)
        if figure.is_file():
            source = outputs.relative(figure)
            parts.append(f"<h3>{caption}</h3><img src='{escape(source)}' alt='{caption}'>")
    parts.append(_predictions(outputs))
    return "\n".join(parts)


def _predictions(outputs: T1wOutputs) -> str:
    """The predictions table and each target's attention figure (or why they are absent)."""
    table = outputs.predictions
    if not table.is_file():
        return "<h3>Predictions</h3><p>No predictions (--preproc-only, or see logs/).</p>"
    try:  # the sidecar is written last: without it the table is from an interrupted run
        sidecar = json.loads(sidecar_path(table).read_text(encoding="utf-8"))
        rows = pd.read_csv(table, sep="\t")
    except (OSError, ValueError):
        return ("<h3>Predictions</h3><p class='flag'>Incomplete (the run that wrote them was "
                "interrupted): rerun the participant level.</p>")
    parts = ["<h3>Predictions</h3>"]
    if "Warning" in sidecar:
        parts.append(f"<p class='warn'>{escape(sidecar['Warning'])}</p>")
    for flag in ("in_distribution", "in_training"):  # as the TSV says them (pandas reads
        if flag in rows:                            # true/false as booleans)
            rows[flag] = rows[flag].astype(str).str.lower()
    evidence = {str(m.get("name")): evidence_line(m) for m in sidecar.get("Models", [])}
    shown = rows.assign(evidence=[evidence.get(str(m), NO_CARD) for m in rows["model"]])
    parts.append(shown.to_html(index=False, float_format=lambda v: f"{v:.3f}", border=0))
    parts.extend(f"<p class='flag'>{escape(line)}</p>"
                 for line in cautions(sidecar.get("Models", [])))
    parts.append("<p>value: P(MDD) for the classifier, the predicted score for a regressor; "
                 "mean over the bundle's fold models (std: their spread). evidence: the "
                 "model card's cross-validated performance on its training cohort. distance / "
                 "in_distribution: how far this input lies from the model's training inputs, "
                 "and whether within the threshold calibrated on held-out training scans. "
                 "in_training: the model was trained on this participant, so its value is "
                 "in-sample. site / harmonized: the participant's site, and whether the model's "
                 "ComBat fit removed that site's effect as it did from its training inputs "
                 "(n/a: the model was trained without harmonisation). "
                 "Attention maps: guided backpropagation for regressors, the signed log-odds "
                 "gradient for the classifier; top 1 % of voxels shown.</p>")
    for target in rows["target"]:
        figure = outputs.attention_figure(str(target))
        if figure.is_file():
            source = outputs.relative(figure)
            parts.append(f"<h4>Attention: {escape(str(target))}</h4>"
                         f"<img src='{escape(source)}' alt='{escape(str(target))} attention'>")
    return "\n".join(parts)


def write_participant_report(output_dir: Path, subject: str, inputs: list[T1wInput]) -> Path:
    """Write OUTPUT_DIR/sub-<subject>.html for the participant's T1w images."""
    sections = "\n".join(_section(output_dir, t1w) for t1w in inputs if t1w.subject == subject)
    html = page(f"sub-{subject}",
                f"<h1>bids_mdd {__version__}: sub-{escape(subject)}</h1>\n{sections}")
    return write_text(derivative_path(output_dir, subject=subject, extension=".html"), html)
