"""group.html: one self-contained page (figures embedded as data URIs) with a methods
paragraph generated from the versions and parameters actually used."""

from __future__ import annotations

import base64
from html import escape
from importlib.metadata import version
from pathlib import Path

import pandas as pd

from bids_mdd import __version__
from bids_mdd.bids.atomic import write_text
from bids_mdd.bids.names import derivative_path
from bids_mdd.group.harmonization import HarmonizationSummary
from bids_mdd.group.options import GroupOptions
from bids_mdd.group.results import GroupResults
from bids_mdd.html_page import page
from bids_mdd.models.card import cautions, evidence_line

#: The group report's rules besides the shared style.
_STYLE = """td,th{font-size:90%}.roc{width:480px}
p.methods{background:#f6f6f6;padding:.7em;border-left:4px solid #888}"""


def _image(path: Path, css_class: str = "") -> str:
    """An <img> holding the SVG at ``path`` as a base64 data URI (the page stays one file)."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    extra = f" class='{css_class}'" if css_class else ""
    return f"<img{extra} src='data:image/svg+xml;base64,{data}' alt='{escape(path.stem)}'>"


def _table(table: pd.DataFrame, digits: int = 3) -> str:
    if table is None or table.empty:
        return "<p>(none)</p>"
    return table.to_html(index=False, border=0, na_rep="n/a",
                         float_format=lambda v: f"{v:.{digits}g}" if abs(v) < 1e-3 and v != 0
                         else f"{v:.{digits}f}")


def _table_with_links(table: pd.DataFrame, column: str) -> str:
    """:func:`_table` with ``column``'s paths (relative to OUTPUT_DIR) as links from group/."""
    linked = table.copy()
    linked[column] = [f"<a href='../{escape(path)}'>{escape(path)}</a>" if path else ""
                      for path in table[column]]
    return linked.to_html(index=False, border=0, na_rep="n/a", escape=False)


def _harmonization_sentence(harmonization: HarmonizationSummary | None) -> str:
    if harmonization is None:
        return ""
    sites = len(harmonization.sites)
    return (f"Before the model, site effects (participants.tsv column "
            f"'{escape(harmonization.column)}', {sites} sites) were removed from the GM maps by "
            f"{escape(harmonization.method)}, fitted on all participants over the GM mask's "
            "voxels and keeping "
            f"{', '.join(escape(c) for c in harmonization.preserved)}; the share of GM-voxel "
            f"variance between site means went from {harmonization.site_variance_before:.3f} "
            f"to {harmonization.site_variance_after:.3f} ({harmonization.site_variance_chance:.3f}"
            " expected without any site effect). Site stayed in the model as a covariate, so "
            "that the degrees of freedom of the site means are counted. ")


def _harmonization_table(harmonization: HarmonizationSummary) -> str:
    """Site effects before and after ComBat: what the reader checks first."""
    table = pd.DataFrame({
        "": ["before ComBat", "after ComBat", "expected without site effects"],
        "share of GM-voxel variance between site means": [
            harmonization.site_variance_before, harmonization.site_variance_after,
            harmonization.site_variance_chance]})
    sites = ", ".join(f"{escape(site)} ({n})" for site, n in harmonization.sites.items())
    return (f"<h3>Site harmonisation ({escape(harmonization.column)})</h3>"
            f"<p>ComBat over {len(harmonization.sites)} sites: {sites}; kept: "
            f"{escape(', '.join(harmonization.preserved))}.</p>" + _table(table, 3))


def methods_paragraph(results: GroupResults, options: GroupOptions) -> str:
    """The methods text, from the versions installed and the parameters used."""
    glm = results.glm
    versions = ", ".join(f"{name} {version(name)}" for name in ("nilearn", "scipy", "numpy"))
    text = [f"Group analyses were run with bids_mdd {__version__} ({versions}). "]
    if glm is None:
        text.append("No voxelwise model was fitted. ")
    else:
        covariates = glm.covariates
        text += [
            f"Smoothed (8 mm FWHM), Jacobian-modulated grey-matter (GM) maps in "
            f"MNI152NLin2009cAsym space (1.5 mm) of {glm.n_participants} participants "
            f"({glm.n_mdd} MDD, {glm.n_hc} HC; diagnosis from participants.tsv column "
            f"'{escape(glm.label_column)}') entered a voxelwise general linear model "
            "(ordinary least squares) with an intercept, the group "
            + (f"and the covariates {', '.join(escape(c) for c in covariates)} (numeric ones "
               "mean-centred, categorical ones dummy-coded)" if covariates
               else "and no covariate")
            + f", within a GM mask (mean GM ≥ {options.gm_threshold} inside the template brain "
            f"dilated by 6 mm; {glm.mask_voxels} voxels). The two-sided MDD vs HC "
            f"t-statistic ({glm.degrees_of_freedom} degrees of freedom) was thresholded "
            f"with the Benjamini–Hochberg false discovery rate at q = {options.fdr_q}",
            (f" (|t| ≥ {glm.fdr_threshold_t:.2f}). " if glm.fdr_threshold_t
             else "; no voxel survived. "),
            _harmonization_sentence(glm.harmonization),
            f"Clusters (26-connectivity, ≥ {options.min_cluster_voxels} voxels) were labelled "
            "at their peak with the AAL2 atlas, with the share of each AAL2 region they "
            "cover. ",
        ]
    if options.permutations:
        text.append(f"Family-wise error was also controlled by permutation "
                    f"({options.permutations} permutations, "
                    f"{'TFCE' if options.tfce else 'cluster mass'}, nilearn permuted_ols, "
                    f"seed {options.seed}). ")
    if results.attention:
        text.append("Each model's attention maps (guided backpropagation for the symptom-factor "
                    "regressors, the signed gradient of the MDD log-odds for the classifier; "
                    "each scaled by its brain mean |value|) were averaged over participants. ")
    if results.metrics is not None and not results.metrics.empty:
        text.append("Predictions were compared with participants.tsv: accuracy, balanced "
                    "accuracy, recall, specificity and AUC for P(MDD) (threshold 0.5), Pearson "
                    f"r and MAE for each symptom score, with 95 % percentile intervals from "
                    f"{options.n_bootstrap} participant bootstrap resamples (seed "
                    f"{options.seed}).")
    return "".join(text)


def _participants_section(results: GroupResults) -> str:
    parts = ["<h2>Participants</h2>",
             f"<p>{results.n_selected} participant(s) selected (one T1w each: first session, "
             "lowest run).</p>"]
    if results.missing.empty:
        parts.append("<p>Every participant has its GM map, QC metrics and predictions.</p>")
    else:
        counts = "; ".join(f"{n} lack {what}" for what, n in
                           results.missing["missing"].value_counts().items())
        parts.append(f"<p class='flag'>{len(results.missing)} participant(s) lack outputs "
                     f"({escape(counts)}); left out where needed; crash files under "
                     "logs/:</p>")
        table = _table_with_links(results.missing, "crash")
        parts.append(table if len(results.missing) <= 10 else
                     f"<details><summary>the {len(results.missing)} participants</summary>"
                     f"{table}</details>")
    if not results.qc_failed.empty:
        fate = ("kept, as --include-qc-failures asks" if results.qc_failures_included
                else "left out of every analysis (--include-qc-failures keeps them)")
        parts.append(f"<p class='flag'>{len(results.qc_failed)} participant(s) failed the QC "
                     "gate (a metric far outside real scans', or no readable QC metrics): "
                     f"{fate}.</p>")
        parts.append(_table(results.qc_failed))
    parts.append("<h3>Quality control</h3>")
    if results.qc.empty:
        parts.append("<p>No QC metrics found.</p>")
    else:
        shown = results.qc[["participant", "tiv_ml", "gm_fraction", "wm_fraction",
                            "csf_fraction", "template_ncc", "template_mask_dice", "outlier",
                            "flags"]]
        flagged = shown[shown["outlier"]]
        parts.append(f"<p>{len(flagged)} of {len(shown)} participant(s) flagged: a metric "
                     "outside the plausible range, or |robust z| &gt; 3.5 (median/MAD over "
                     "participants; group_desc-qc_metrics.tsv has every z).</p>")
        if not flagged.empty:
            parts.append(_table(flagged))
        parts.append(f"<details><summary>QC metrics of all {len(shown)} participants"
                     f"</summary>{_table(shown)}</details>")
    return "\n".join(parts)


def _voxelwise_section(results: GroupResults) -> str:
    glm = results.glm
    if glm is None:
        return "<h2>Voxelwise GM: MDD vs HC</h2><p>No voxelwise model was fitted.</p>"
    parts = ["<h2>Voxelwise GM: MDD vs HC</h2>",
             f"<p>{escape(glm.caption)}. Red: more GM in MDD; blue: less.</p>"]
    if glm.harmonization is not None:
        parts.append(_harmonization_table(glm.harmonization))
    for key in ("tmap_glass", "tmap_slices"):
        if key in results.figures:
            parts.append(_image(results.figures[key]))
    parts.append(f"<h3>Clusters (FDR q &lt; {glm.fdr_q})</h3>")
    parts.append(_table(results.clusters, 3))
    permutation = results.permutation
    if permutation is not None and results.permutation_clusters is not None:
        parts.append(f"<h3>Clusters ({escape(permutation.method)}, FWE "
                     f"p &lt; 0.05, {permutation.permutations} permutations)</h3>")
        parts.append(_table(results.permutation_clusters, 3))
    return "\n".join(parts)


def _attention_section(results: GroupResults) -> str:
    """Each target's mean map, and who is not in it (participants run with --no-attention)."""
    missing = results.attention_missing
    notes = [f"<p class='warn'>{escape(missing[t])}: not in a mean map.</p>"
             for t in missing if t not in results.attention]
    if not results.attention:
        return "\n".join(["<h2>Attention maps</h2><p>No attention maps found.</p>", *notes])
    parts = ["<h2>Attention maps (mean over participants)</h2>", *notes]
    for target, info in results.attention.items():
        parts.append(f"<h3>{escape(target)} ({info.n_participants} participants)</h3>")
        if target in missing:
            parts.append(f"<p class='warn'>{escape(missing[target])}: the mean is over "
                         f"{info.n_participants} participants.</p>")
        parts.append(_image(info.figure))
        parts.append(_table(info.regions, 3))
    return "\n".join(parts)


def _metrics_section(results: GroupResults) -> str:
    parts = ["<h2>Predictions against participants.tsv</h2>"]
    if results.synthetic_models:
        parts.append("<p class='warn'>At least one model was trained on SYNTHETIC data (e.g. the "
                     "packaged demo set): these predictions and metrics are not for "
                     "clinical or scientific use.</p>")
    if results.models:
        evidence = pd.DataFrame({
            "model": [m.get("name") for m in results.models],
            "model card (training cohort and cross-validated evidence)": [
                evidence_line(m) for m in results.models]})
        parts.append("<h3>Model evidence</h3>")
        parts.append(_table(evidence))
        parts.extend(f"<p class='flag'>{escape(line)}</p>" for line in cautions(results.models))
    if results.metrics is None or results.metrics.empty:
        parts.append("<p>No prediction metrics (no predictions, or no matching label "
                     "column).</p>")
    else:
        parts.append(_table(results.metrics, 3))
    for key, path in results.figures.items():
        if key.startswith("roc_"):
            parts.append(_image(path, "roc"))
    return "\n".join(parts)


def write_group_report(output_dir: Path, results: GroupResults, options: GroupOptions) -> Path:
    """Write OUTPUT_DIR/group/group.html."""
    notes = "".join(f"<li>{escape(note)}</li>" for note in results.notes)
    body = [f"<h1>bids_mdd {__version__}: group report</h1>",
            "<h2>Methods</h2>", f"<p class='methods'>{methods_paragraph(results, options)}</p>",
            f"<h3>Notes</h3><ul>{notes}</ul>" if notes else "",
            _participants_section(results), _voxelwise_section(results),
            _attention_section(results), _metrics_section(results)]
    html = page("bids_mdd group report", "\n".join(body), _STYLE)
    return write_text(derivative_path(output_dir, extension=".html"), html)

