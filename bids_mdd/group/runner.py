"""The group level: voxelwise MDD vs HC statistics, clusters, mean attention maps, prediction
metrics, QC and the report, written under ``OUTPUT_DIR/group``.

Reads only the participant level's derivatives (through the naming module) and
participants.tsv. Every file is written atomically with its JSON sidecar; a rerun overwrites
the group outputs (they depend on every participant, so nothing is resumed here) and then
removes those of an earlier run that it did not make, so that the group outputs are exactly
this run's (a t-map beside an earlier run's permutation maps would read as one analysis).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from bids_mdd.bids.atomic import remove_stale_temporaries
from bids_mdd.bids.derivatives import (
    copy_file,
    provenance,
    write_dataset_description,
    write_file,
    write_image,
)
from bids_mdd.bids.discovery import T1wInput, select_one_per_participant
from bids_mdd.bids.names import (
    attention_desc,
    derivative_path,
    parse_path,
    relative_path,
    sidecar_path,
)
from bids_mdd.bids.participants import find_column
from bids_mdd.errors import BidsMddError, ExitCode
from bids_mdd.group import figures
from bids_mdd.group.attention import mapped_targets, mean_map, missing_maps_note
from bids_mdd.group.clusters import cluster_table, region_summary
from bids_mdd.group.glm import (
    GlmResult,
    contrast_vector,
    design_matrix,
    fdr_mask,
    fit_glm,
    permutation_inference,
    search_region,
)
from bids_mdd.group.harmonization import check_design, harmonize_maps, site_labels
from bids_mdd.group.inputs import (
    ParticipantFiles,
    covariate_table,
    diagnosis,
    gather,
    incomplete_participants,
    load_participants,
    missing_outputs,
)
from bids_mdd.group.metrics import METRIC_COLUMNS, collect_predictions, group_metrics
from bids_mdd.group.options import GroupOptions
from bids_mdd.group.qc import qc_table
from bids_mdd.group.report import write_group_report
from bids_mdd.group.results import AttentionSummary, GlmSummary, GroupResults, PermutationSummary
from bids_mdd.preproc.qc import gate_failures
from bids_mdd.spaces.grids import CLASSIFIER_GRID, GRIDS, Grid
from bids_mdd.spaces.templates import TEMPLATE

LOGGER = logging.getLogger(__name__)

CONTRAST = "MDDvsHC"
GROUP_COLUMN = "MDD"
#: The alpha of the permutation (FWE) mask.
FWE_ALPHA = 0.05
#: Uncorrected p of the exploratory threshold shown when nothing survives FDR.
EXPLORATORY_P = 0.001
#: Automatic covariates are added only while the residual degrees of freedom stay >= this.
MIN_RESIDUAL_DF = 2
#: Fewer residual degrees of freedom than this: a warning. Each voxel's variance then rests on
#: a handful of residuals, and Student's t tails are heavy (|t| for two-sided p < 0.001 is 637
#: at 1 df, 12.9 at 3, 4.6 at 10, 3.3 for large n): maps are noisy and FDR rarely passes. 10 is
#: a rule of thumb, where the critical |t| is within 40 % of its large-sample value.
LOW_RESIDUAL_DF = 10


def _record(results: GroupResults, path: Path, sidecar: bool = True) -> Path:
    """Note ``path`` (and its JSON sidecar) as made by this run."""
    results.written.add(Path(path))
    if sidecar:
        results.written.add(sidecar_path(path))
    return Path(path)


def _software() -> dict[str, str]:
    return {name: version(name) for name in ("nilearn", "scipy", "numpy", "pandas")}


def _write_table(results: GroupResults, path: Path, table: pd.DataFrame,
                 sidecar: dict[str, Any]) -> Path:
    write_file(path, lambda tmp: table.to_csv(tmp, sep="\t", index=False, na_rep="n/a",
                                              float_format="%.10g"), sidecar)
    return _record(results, path)


def _write_image(results: GroupResults, path: Path, image, sidecar: dict[str, Any]) -> Path:
    write_image(path, image, sidecar)
    return _record(results, path)


def _figure(results: GroupResults, output_dir: Path, desc: str, make) -> Path:
    """Make a figure in a temporary folder with ``make(path)`` and copy it atomically."""
    path = derivative_path(output_dir, datatype="figures", desc=desc, extension=".svg")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        made = make(str(Path(tmp) / f"{desc}.svg"))
        copy_file(made, path)
    return _record(results, path, sidecar=False)


# --- voxelwise statistics ----------------------------------------------------------------------

@dataclass(frozen=True)
class _Design:
    """The GLM's design matrix and column names, the participants' table it was made from, and
    the participants.tsv column the diagnosis was read from."""

    matrix: np.ndarray
    names: list[str]
    table: pd.DataFrame
    label_column: str
    covariates: list[str]  # the covariates ComBat keeps (the design also holds the site)
    sites: list[str] | None = None  # each participant's site, with --harmonize
    site_column: str | None = None  # the participants.tsv column they come from


def _design(files: Sequence[ParticipantFiles], bids_dir: Path, options: GroupOptions,
            notes: list[str]) -> _Design:
    participants, source = load_participants(bids_dir)
    subjects = [item.t1w.subject for item in files]
    coded, column = diagnosis(participants, subjects, options.labels, source)
    covariates, covariate_notes = covariate_table(participants, files, options.covariates,
                                                  source)
    notes.extend(covariate_notes)
    table = covariates.copy()
    table.insert(0, GROUP_COLUMN, coded.to_numpy())
    table.index = [f"sub-{s}" for s in subjects]
    kept = list(covariates.columns)
    if options.covariates is None:  # automatic: keep those the cohort can carry
        kept = []
        for name in covariates.columns:
            try:
                design, _ = design_matrix(table, GROUP_COLUMN, [*kept, name])
            except BidsMddError as error:
                notes.append(f"covariate {name} left out: {error}")
                continue
            if design.shape[0] - design.shape[1] < MIN_RESIDUAL_DF:
                notes.append(f"covariate {name} left out: {len(table)} participants leave "
                             f"fewer than {MIN_RESIDUAL_DF} residual degrees of freedom")
                continue
            kept.append(name)
    sites = site_column = None
    in_design = kept
    if options.harmonize:
        site_column = find_column(participants, options.harmonize)
        if site_column is None:
            columns = ", ".join(map(str, participants.columns))
            raise BidsMddError(f"{source}: no site column {options.harmonize!r} for "
                               f"--harmonize (columns: {columns})", ExitCode.USAGE)
        kept = [name for name in kept if name != site_column]
        sites = site_labels(participants, subjects, site_column, source)
        check_design(table, sites, GROUP_COLUMN, kept, site_column, source)
        # site stays in the GLM after ComBat: its site means used degrees of freedom that the
        # GLM must count (docs/benchmarks.md: without it, a null multi-site cohort has FDR
        # voxels)
        table[site_column] = sites
        in_design = [*kept, site_column]
    design, names = design_matrix(table, GROUP_COLUMN, in_design)
    return _Design(design, names, table, column, kept, sites, site_column)


def _t_threshold(result: GlmResult, significant: np.ndarray) -> float:
    """The smallest |t| among the significant voxels (inf when there are none)."""
    return float(np.abs(result.t[significant]).min()) if significant.any() else float("inf")


def _write_glm_maps(output_dir: Path, grid: Grid, result: GlmResult,
                    maps: dict[str, np.ndarray], sidecar: dict[str, Any],
                    options: GroupOptions, results: GroupResults) -> None:
    """The t and effect statmaps, the FDR mask and the group GM mask, with sidecars."""
    space = {"space": TEMPLATE, "res": grid.res}
    design = " + ".join(sidecar["Parameters"]["Design"])
    for entities, data, dtype, description in (
            ({"contrast": CONTRAST, "stat": "t", "suffix": "statmap"}, maps["t"], np.float32,
             f"Two-sided t statistic of MDD minus HC (OLS; GM ~ {design}); 0 outside the GM "
             "mask"),
            ({"contrast": CONTRAST, "stat": "effect", "suffix": "statmap"}, maps["effect"],
             np.float32, "MDD minus HC difference in modulated GM (c'beta), adjusted for the "
                         "covariates; 0 outside the GM mask"),
            ({"contrast": CONTRAST, "desc": "FDR", "suffix": "mask"}, maps["FDR"], np.uint8,
             f"Voxels with Benjamini-Hochberg FDR q <= {options.fdr_q} (two-sided)"),
            ({"desc": "GM", "suffix": "mask"}, result.mask, np.uint8,
             f"Group GM mask: mean GM >= {options.gm_threshold} within the template brain "
             "dilated by 6 mm")):
        _write_image(results, derivative_path(output_dir, **space, **entities),
                     grid.image(data, dtype=dtype), {**sidecar, "Description": description})


def _with_gm(files: Sequence[ParticipantFiles], output_dir: Path) -> list[ParticipantFiles]:
    with_gm = [item for item in files if item.gm is not None]
    if not with_gm:
        raise BidsMddError(f"no participant in {output_dir} has a GM map; run the participant "
                           "level first", ExitCode.MISSING_INPUT)
    return with_gm


def _check_degrees_of_freedom(design: np.ndarray, names: Sequence[str], table: pd.DataFrame,
                              results: GroupResults) -> None:
    """One warning (and a report note) when the GLM has fewer than LOW_RESIDUAL_DF residual
    degrees of freedom."""
    n, p = design.shape
    if n - p >= LOW_RESIDUAL_DF:
        return
    n_mdd = int(table[GROUP_COLUMN].sum())
    message = (f"voxelwise GLM: {n_mdd} MDD and {n - n_mdd} HC leave {n - p} residual degree(s) "
               f"of freedom ({n} participants, {p} design columns: {', '.join(names)}), fewer "
               f"than {LOW_RESIDUAL_DF}: the t-map is unreliable; add participants "
               "or drop covariates (--covariates)")
    LOGGER.warning("%s", message)
    results.notes.append(message)


def voxelwise(output_dir: Path, bids_dir: Path, files: Sequence[ParticipantFiles],
              options: GroupOptions, results: GroupResults, grid: Grid = CLASSIFIER_GRID,
              design: _Design | None = None) -> None:
    """GLM, FDR, optional permutation inference, cluster tables and t-map figures
    (``design``: :func:`_design` of the participants with GM maps, when already made)."""
    with_gm = _with_gm(files, output_dir)
    made = design or _design(with_gm, bids_dir, options, results.notes)
    design, names, table = made.matrix, made.names, made.table
    paths = [item.gm for item in with_gm]
    inputs, region, harmonization = paths, search_region(grid), None
    if made.sites is not None:
        inputs, region, harmonization = harmonize_maps(
            paths, made.sites, table, GROUP_COLUMN, made.covariates, made.site_column,
            region, grid, options.gm_threshold, options.harmonize_empirical_bayes)
    contrast = contrast_vector(names, GROUP_COLUMN)
    LOGGER.info("voxelwise GLM: %d participants (%d MDD, %d HC), design %s", len(paths),
                int(table[GROUP_COLUMN].sum()), int((1 - table[GROUP_COLUMN]).sum()),
                ", ".join(names))
    result = fit_glm(inputs, design, region, contrast,
                     chunk_size=options.chunk_size, grid=grid, min_mean=options.gm_threshold)
    significant = fdr_mask(result.p, options.fdr_q)
    t_grid = result.to_grid(result.t)
    effect_grid = result.to_grid(result.effect)
    fdr_grid = result.to_grid(significant.astype(float)) > 0
    threshold = _t_threshold(result, significant)
    if significant.any():
        caption = (f"FDR q < {options.fdr_q} (|t| ≥ {threshold:.2f}, "
                   f"{int(significant.sum())} voxels)")
        shown_threshold = threshold
    else:
        shown_threshold = float(stats.t.isf(EXPLORATORY_P / 2, result.df))
        caption = (f"no voxel survives FDR q < {options.fdr_q}; shown: uncorrected "
                   f"p < {EXPLORATORY_P} (|t| ≥ {shown_threshold:.2f}), exploratory")
    summary = GlmSummary(
        design=list(names), contrast=contrast.tolist(), n_participants=len(paths),
        n_mdd=int(table[GROUP_COLUMN].sum()), n_hc=int((1 - table[GROUP_COLUMN]).sum()),
        degrees_of_freedom=result.df, gm_threshold=options.gm_threshold,
        mask_voxels=int(result.mask.sum()), fdr_q=options.fdr_q,
        fdr_threshold_t=None if np.isinf(threshold) else round(threshold, 4),
        label_column=made.label_column, caption=caption, harmonization=harmonization)
    parameters = summary.parameters()
    sources = [str(p) for p in paths]
    _write_glm_maps(output_dir, grid, result, {"t": t_grid, "effect": effect_grid,
                                               "FDR": fdr_grid},
                    provenance(sources, parameters, _software()), options, results)
    clusters = cluster_table(t_grid, effect_grid, fdr_grid, grid, options.min_cluster_voxels)
    _write_table(results, derivative_path(output_dir, suffix="clusters", extension=".tsv"),
                 clusters,
                 provenance(sources, {**parameters, "MinClusterVoxels":
                                      options.min_cluster_voxels, "Connectivity": 26},
                            _software(), Atlas="AAL2 (Rolls et al. 2015), through nilearn",
                            Description="Clusters of FDR-significant voxels"))
    results.clusters = clusters
    results.glm = summary
    t_image = grid.image(t_grid)
    results.figures["tmap_glass"] = _figure(
        results, output_dir, "tmapGlass",
        partial(figures.tmap_glass, t_image, shown_threshold, caption))
    results.figures["tmap_slices"] = _figure(
        results, output_dir, "tmapSlices",
        partial(figures.tmap_slices, t_image, shown_threshold, caption))
    if options.permutations > 0:
        _permutations(output_dir, inputs, design, result, options, results, grid, sources,
                      parameters, t_grid, effect_grid)


def _permutations(output_dir: Path, paths: Sequence[Path], design: np.ndarray,
                  result: GlmResult, options: GroupOptions, results: GroupResults, grid: Grid,
                  sources: list[str], parameters: dict[str, Any], t_grid: np.ndarray,
                  effect_grid: np.ndarray) -> None:
    method = "TFCE" if options.tfce else "ClusterMass"
    LOGGER.info("permutation inference (%s, %d permutations); loads every GM map",
                method, options.permutations)
    logp = permutation_inference(paths, design, result.mask, options.permutations,
                                 tfce=options.tfce, seed=options.seed, grid=grid,
                                 n_jobs=options.n_jobs)
    fwe = logp > -np.log10(FWE_ALPHA)
    sidecar = provenance(sources, {**parameters, "Permutations": options.permutations,
                                   "Method": method, "Seed": options.seed,
                                   "Jobs": options.n_jobs},
                         _software(), Description=f"-log10 family-wise-error p ({method}, "
                                                  "nilearn permuted_ols, two-sided)")
    space = {"space": TEMPLATE, "res": grid.res, "contrast": CONTRAST}
    _write_image(results, derivative_path(output_dir, **space, stat="logp", desc=method,
                                          suffix="statmap"), grid.image(logp), sidecar)
    _write_image(results, derivative_path(output_dir, **space, desc=method, suffix="mask"),
                 grid.image(fwe, dtype=np.uint8),
                 {**sidecar, "Description": f"Voxels with {method} FWE p < {FWE_ALPHA}"})
    clusters = cluster_table(t_grid, effect_grid, fwe, grid, options.min_cluster_voxels)
    _write_table(results, derivative_path(output_dir, desc=method, suffix="clusters",
                                          extension=".tsv"),
                 clusters, {**sidecar, "Description": f"Clusters of {method} FWE-significant "
                                                      "voxels (peaks and t from the GLM)"})
    results.permutation_clusters = clusters
    results.permutation = PermutationSummary(method, options.permutations, int(fwe.sum()))


# --- attention maps ----------------------------------------------------------------------------

def attention(output_dir: Path, files: Sequence[ParticipantFiles],
              results: GroupResults) -> None:
    """The mean attention map of each target, its region table and figure; participants
    without the map (run with --no-attention) are counted in the report, not silently left
    out."""
    for target in mapped_targets(files):
        note = missing_maps_note(files, target)
        if note:
            LOGGER.warning("%s", note)
            results.attention_missing[target] = note
        paths = [item.attention[target] for item in files if target in item.attention]
        if not paths:
            continue
        grid = GRIDS[parse_path(paths[0])["res"]]  # found through a grid's res- entity
        try:
            image = mean_map(paths, grid)
        except BidsMddError as error:  # a map off its grid: reported, the others go on
            results.notes.append(f"{target}: attention maps not averaged: {error}")
            continue
        desc = attention_desc(target)
        entities = {"space": TEMPLATE, "res": grid.res, "desc": desc}
        sidecar = provenance([str(p) for p in paths], {"Participants": len(paths)},
                             _software(), Target=target,
                             Description="Mean over participants of their attention maps "
                                         "(each scaled by its brain mean |value|)")
        _write_image(results, derivative_path(output_dir, **entities, suffix="attention"), image,
                     sidecar)
        regions = region_summary(np.asarray(image.dataobj), None, grid, top=10)
        _write_table(results,
                     derivative_path(output_dir, **entities, suffix="regions", extension=".tsv"),
                     regions, {**sidecar, "Description": "AAL2 regions ranked by the mean "
                                                         "attention over their voxels"})
        title = f"{target}: mean attention of {len(paths)} participants"
        figure = _figure(results, output_dir, f"attention{desc}",
                         partial(figures.attention_figure, image, title))
        results.attention[target] = AttentionSummary(len(paths), regions, figure)


# --- predictions and metrics -------------------------------------------------------------------

def predictions(output_dir: Path, bids_dir: Path, files: Sequence[ParticipantFiles],
                options: GroupOptions, results: GroupResults) -> None:
    """group_predictions.tsv, group_metrics.tsv/.json and the ROC figure."""
    tables = {f"sub-{item.t1w.subject}": pd.read_csv(item.predictions, sep="\t")
              for item in files if item.predictions is not None}  # one T1w per participant
    if not tables:
        results.notes.append("no participant has predictions (participant level run with "
                             "--preproc-only?): no prediction metrics")
        return
    table = collect_predictions(tables)
    sources = [str(item.predictions) for item in files if item.predictions is not None]
    _write_table(results, derivative_path(output_dir, suffix="predictions", extension=".tsv"),
                 table,
                 provenance(sources, None, _software(),
                            Description="Every participant's predictions (one row per model "
                                        "output)"))
    participants, source = load_participants(bids_dir)
    scored = group_metrics(table, participants, options.labels.column,
                            list(options.labels.positive or []) or None,
                            list(options.labels.negative or []) or None,
                            n_bootstrap=options.n_bootstrap, seed=options.seed, source=source)
    metrics, notes = scored.table, scored.notes
    results.notes.extend(notes)
    metric_sidecar = provenance(sources + [str(source)],
                                {"Bootstrap": options.n_bootstrap, "Seed": options.seed,
                                 "ConfidenceLevel": 0.95, "Threshold": 0.5},
                                _software(), Columns=dict(METRIC_COLUMNS), Notes=notes)
    _write_table(results, derivative_path(output_dir, suffix="metrics", extension=".tsv"),
                 metrics, metric_sidecar)
    results.metrics = metrics
    results.models = _models(files)
    results.synthetic_models = any(m.get("synthetic") for m in results.models)
    for model, (observed, p_mdd) in scored.classifier_scores.items():
        results.figures[f"roc_{model}"] = _figure(
            results, output_dir, f"roc{attention_desc(model)}",
            partial(figures.roc_figure, observed, p_mdd, title=f"{model}: P(MDD)",
                    n_bootstrap=options.n_bootstrap, seed=options.seed))


def _models(files: Sequence[ParticipantFiles]) -> list[dict[str, Any]]:
    """Every model that made the participants' predictions, as their sidecars record it (the
    first record of each name)."""
    models: dict[str, dict[str, Any]] = {}
    for item in files:
        if item.predictions is None:
            continue
        try:
            sidecar = json.loads(sidecar_path(item.predictions).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for model in sidecar.get("Models", []):
            models.setdefault(str(model.get("name")), model)
    return list(models.values())


# --- the whole level ---------------------------------------------------------------------------

def _qc_gate(files: list[ParticipantFiles], options: GroupOptions,
             results: GroupResults) -> list[ParticipantFiles]:
    """The participants to analyse: without those failing the QC gate, unless
    ``options.include_qc_failures``; the failures are recorded for the report either way.

    A participant with outputs to analyse but no readable QC metrics cannot pass the gate: it
    is treated as failing it, with its own warning (even when kept: a broken file is not a bad
    scan, and would otherwise go unnoticed)."""
    gated = {item.name: gate_failures(item.qc) for item in files if item.qc}
    unreadable = [item for item in files if item.qc is None and item.qc_problem
                  and (item.gm is not None or item.predictions is not None)]
    gated.update({item.name: [item.qc_problem] for item in unreadable})
    failed = [item for item in files if gated.get(item.name)]
    results.qc_failed = pd.DataFrame(
        [{"participant": item.name, "qc_failures": "; ".join(gated[item.name])}
         for item in failed], columns=["participant", "qc_failures"])
    results.qc_failures_included = options.include_qc_failures
    if unreadable:
        LOGGER.warning("%d participant(s) have no readable QC metrics, so the QC gate cannot "
                       "pass them: %s; %s; rerun the participant level for them", len(unreadable),
                       "; ".join(f"{item.name} ({item.qc_problem})" for item in unreadable[:5])
                       + ("; ..." if len(unreadable) > 5 else ""),
                       "kept, as --include-qc-failures asks" if options.include_qc_failures
                       else "left out (--include-qc-failures keeps them)")
    if not failed or options.include_qc_failures:
        return files
    unreadable_names = {item.name for item in unreadable}
    metric_failures = [item for item in failed if item.name not in unreadable_names]
    if metric_failures:
        LOGGER.warning("%d participant(s) failed the QC gate and are left out "
                       "(--include-qc-failures keeps them): %s", len(metric_failures),
                       "; ".join(f"{item.name} ({', '.join(gated[item.name])})"
                                 for item in metric_failures[:5])
                       + ("; ..." if len(metric_failures) > 5 else ""))
    return [item for item in files if not gated.get(item.name)]


def _shown(path: Path, bids_dir: Path) -> str:
    """``path`` relative to the dataset when it lies inside, else as it is."""
    try:
        return Path(path).resolve().relative_to(Path(bids_dir).resolve()).as_posix()
    except (ValueError, OSError):
        return str(path)


def _warn_tied_t1w(inputs: Sequence[T1wInput], chosen: Sequence[T1wInput],
                   bids_dir: Path) -> None:
    """A warning for each participant whose T1w was picked by name among several of the same
    session and run (acq-, ce-, rec- variants): no rule says which one the user meant."""
    for item in chosen:
        tied = [other for other in inputs if other.subject == item.subject
                and other.session == item.session and other.run == item.run
                and other.path != item.path]
        if not tied:
            continue
        differ = [key for key in ("acquisition", "ceagent", "reconstruction")
                  if any(other.entities.get(key) != item.entities.get(key) for other in tied)]
        example = (f', e.g. {{"t1w": {{"{differ[0]}": '
                   f'[{json.dumps(item.entities.get(differ[0]))}, null]}}}}' if differ else "")
        LOGGER.warning("sub-%s has %d T1w of the same session and run: the group level uses %s "
                       "(the first by name) and leaves out %s; choose one with "
                       "--bids-filter-file%s", item.subject, len(tied) + 1,
                       _shown(item.path, bids_dir),
                       ", ".join(_shown(other.path, bids_dir) for other in tied), example)


def owned_output(relative: str) -> bool:
    """Whether ``relative`` (under OUTPUT_DIR, '/'-separated) is a name the group level
    writes: under group/, and built back exactly by the naming module's group patterns (a
    file of the user's there, e.g. group/notes.txt, is not)."""
    if not relative.startswith("group/"):
        return False
    try:
        return relative_path(**parse_path(relative)) == relative
    except (ValueError, TypeError):
        return False


def remove_earlier_outputs(output_dir: Path, made: set[Path]) -> list[str]:
    """Remove the group outputs (see :func:`owned_output`) under ``output_dir`` that are not
    in ``made``; return their paths relative to ``output_dir``. Symbolic links are removed,
    never followed."""
    output_dir = Path(output_dir)
    keep = {Path(path).relative_to(output_dir).as_posix() for path in made}
    removed = []
    for folder, _, names in os.walk(output_dir / "group"):
        for name in sorted(names):
            path = Path(folder) / name
            relative = path.relative_to(output_dir).as_posix()
            if relative not in keep and owned_output(relative):
                path.unlink(missing_ok=True)
                removed.append(relative)
    return sorted(removed)


def run_group_level(bids_dir: Path, output_dir: Path, inputs: Sequence[T1wInput],
                    options: GroupOptions) -> GroupResults:
    """Run every group analysis on one T1w per participant (first session, lowest run)."""
    chosen = select_one_per_participant(list(inputs))
    LOGGER.info("group level uses %d participant(s): one T1w each (first session, lowest run)",
                len(chosen))
    _warn_tied_t1w(list(inputs), chosen, bids_dir)
    files = gather(output_dir, chosen)
    _with_gm(files, output_dir)
    load_participants(bids_dir)  # a broken participants.tsv stops the run before any write
    incomplete = incomplete_participants(files)
    if incomplete and not options.allow_partial:
        shown = "; ".join(incomplete[:3]) + (f"; and {len(incomplete) - 3} more"
                                              if len(incomplete) > 3 else "")
        raise BidsMddError(f"{output_dir}: the participant level is not finished: {shown}; "
                           "finish it (rerun the participant level for them) or pass "
                           "--allow-partial", ExitCode.MISSING_INPUT)
    results = GroupResults(n_selected=len(chosen), missing=missing_outputs(files, output_dir),
                           qc=qc_table(files))
    results.notes.extend(f"participant level not finished (--allow-partial): {reason}"
                         for reason in incomplete)
    files = _qc_gate(files, options, results)
    # the diagnosis and covariates of participants.tsv are checked before any write
    design = _design(_with_gm(files, output_dir), bids_dir, options, results.notes)
    _check_degrees_of_freedom(design.matrix, design.names, design.table, results)
    write_dataset_description(output_dir, [bids_dir])
    for stale in remove_stale_temporaries(output_dir,
                                          lambda relative: relative.startswith("group/")):
        LOGGER.info("removed %s, left by an interrupted run", stale)
    (output_dir / "group").mkdir(parents=True, exist_ok=True)
    if not results.qc.empty:
        _write_table(results,
                     derivative_path(output_dir, desc="qc", suffix="metrics", extension=".tsv"),
                     results.qc,
                     provenance([], {"RobustZ": 3.5}, _software(),
                                Description="QC metrics of each participant, robust z-scores "
                                            "(median/MAD) and outlier flags"))
    voxelwise(output_dir, bids_dir, files, options, results, design=design)
    attention(output_dir, files, results)
    predictions(output_dir, bids_dir, files, options, results)
    report = derivative_path(output_dir, extension=".html")
    removed = remove_earlier_outputs(output_dir, results.written | {report})
    if removed:
        LOGGER.info("removed %d group output(s) of an earlier run that this run did not make: "
                    "%s", len(removed), ", ".join(removed))
        results.notes.append(f"removed {len(removed)} group output(s) of an earlier run that "
                             "this run did not make: " + ", ".join(removed[:10])
                             + (", ..." if len(removed) > 10 else ""))
    results.report = _record(results, write_group_report(output_dir, results, options),
                             sidecar=False)
    return results
