"""The participant level: preprocess every T1w (one graph, depth-first), and as each one's
derivatives are written apply the models (batched) and write its participant's report; a
failing participant never stops the others."""

from __future__ import annotations

import json
import logging
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from bids_mdd.bids.atomic import remove_stale_temporaries
from bids_mdd.bids.derivatives import source_dataset_entry, write_dataset_description
from bids_mdd.bids.discovery import T1wInput
from bids_mdd.bids.names import crash_name, derivative_path, names_participant
from bids_mdd.bids.participants import read_participants
from bids_mdd.errors import BidsMddError, ExitCode
from bids_mdd.models.device import resolve_device
from bids_mdd.models.inference import LoadedModel, load_models
from bids_mdd.participant.background import AfterPreprocessing
from bids_mdd.participant.failures import (
    Failure,
    crashed_node,
    exit_code_for,
    from_error,
    traceback_failure,
)
from bids_mdd.participant.predictions import (
    NO_DATASET,
    ModelStepSettings,
    SourceDataset,
    predict_participants,
    up_to_date,
)
from bids_mdd.participant.preprocessing import preprocess
from bids_mdd.participant.progress import participants_in_progress
from bids_mdd.participant.report import write_participant_report
from bids_mdd.participant.resources import Resources, plan_resources, thread_environment
from bids_mdd.preproc.qc import gate_failures
from bids_mdd.preproc.workflow import PreprocOptions, workflow_name

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class ParticipantOptions:
    """Everything the participant level needs besides its inputs and folders."""

    preproc: PreprocOptions
    models: list[Path] | None = None  # bundle folders or packaged set names (None: default)
    preproc_only: bool = False
    device: str = "auto"
    nprocs: int | None = None  # None: the CPUs this process may use
    omp_nthreads: int | None = None  # None: chosen from nprocs and the number of T1w
    mem_gb: float | None = None
    model_batch_size: int | None = None
    verbose: bool = False
    qc_fail_ok: bool = False  # exit 0 although a participant failed the QC gate
    attention: bool = True  # False (--no-attention): predictions without attention maps


def apply_models(inputs: list[T1wInput], output_dir: Path, models: list[LoadedModel],
                 settings: ModelStepSettings, dataset: SourceDataset = NO_DATASET,
                 ) -> list[Failure]:
    """Apply the loaded models to each preprocessed T1w not yet up to date; return the
    failures (``dataset``: what the models read of the input dataset besides its images)."""
    logs = output_dir / "logs"
    todo = []
    for t1w in inputs:
        if up_to_date(t1w.outputs(output_dir), models, t1w.path,
                      attention=settings.attention, dataset=dataset):
            LOGGER.info("predictions of %s are up to date with these models and inputs",
                        t1w.path)
        else:
            todo.append(t1w)
    outcomes = predict_participants([t1w.outputs(output_dir) for t1w in todo], models,
                                    settings, [t1w.path for t1w in todo], dataset)
    failures = []
    for t1w, outcome in zip(todo, outcomes):
        if isinstance(outcome, BidsMddError):
            failures.append(from_error(logs, t1w, outcome))
        elif isinstance(outcome, Exception):
            trace = "".join(traceback.format_exception(outcome))
            failures.append(traceback_failure(t1w, f"{t1w.path}: applying the models failed",
                                              trace, logs))
        else:
            LOGGER.info("wrote %s", outcome)
            continue
        LOGGER.error("%s", failures[-1].reason)
    return failures


def source_dataset(bids_dir: Path, models: list[LoadedModel]) -> SourceDataset:
    """The input dataset's DOI, and its participants.tsv when a model harmonises by site (read
    before preprocessing, so a broken table stops the run before hours of work)."""
    participants = None
    table = bids_dir / "participants.tsv"
    if any(model.harmonization is not None for model in models):
        if table.is_file():
            participants = read_participants(table)
        else:
            LOGGER.warning("%s: not found; the models trained on harmonised inputs (%s) will "
                           "see every scan unharmonised", table,
                           ", ".join(m.bundle.name for m in models if m.harmonization))
    return SourceDataset(source_dataset_entry(bids_dir).get("DOI"), participants)


def qc_gate(output_dir: Path, inputs: list[T1wInput]) -> list[str]:
    """One line per preprocessed T1w whose QC metrics fail the gate (``HARD_LIMITS``)."""
    failed = []
    for t1w in inputs:
        path = t1w.outputs(output_dir).output("qc")
        try:
            metrics = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # not preprocessed: a failure of its own
        reasons = gate_failures(metrics)
        if reasons:
            report = derivative_path(output_dir, subject=t1w.subject, extension=".html")
            failed.append(f"{t1w.path}: {'; '.join(reasons)} (see {report}); the group level "
                          "leaves it out")
    return failed


def write_reports(output_dir: Path, inputs: list[T1wInput], subjects: set[str]) -> None:
    """One HTML report per participant of ``subjects``, covering all of its T1w images."""
    for subject in dict.fromkeys(t1w.subject for t1w in inputs):
        if subject in subjects:
            write_participant_report(output_dir, subject, inputs)


def _remove_old_crash(output_dir: Path, t1w: T1wInput) -> None:
    """An earlier run's crash files of a T1w that succeeded now must not pass for this run's:
    its own, and nipype's of its nodes (their ``Node:`` line names the T1w's workflow)."""
    logs = output_dir / "logs"
    (logs / crash_name(t1w.output_entities())).unlink(missing_ok=True)
    workflow = workflow_name(t1w)
    for crash in logs.glob("crash-*.txt"):
        try:
            node = crashed_node(crash)
        except (OSError, UnicodeDecodeError):
            continue
        if workflow in node.split("."):
            crash.unlink(missing_ok=True)


def finish_participants(output_dir: Path, inputs: list[T1wInput], models: list[LoadedModel],
                        settings: ModelStepSettings, finished: Callable[[str], None],
                        dataset: SourceDataset = NO_DATASET
                        ) -> tuple[Callable[[list[T1wInput]], list[Failure]], set[str]]:
    """What follows a T1w's preprocessing: its predictions, then, once all of a participant's
    T1w are through, the participant's report and ``finished(subject)``. Returns that step
    and the set of participants it reports (filled as it goes)."""
    reported: set[str] = set()
    through: set[Path] = set()

    def handle(batch: list[T1wInput]) -> list[Failure]:
        failures = (apply_models(batch, output_dir, models, settings, dataset)
                    if models else [])
        failed = {failure.t1w.path for failure in failures}
        for t1w in batch:
            if t1w.path not in failed:
                _remove_old_crash(output_dir, t1w)
                through.add(t1w.path)
        for subject in dict.fromkeys(t1w.subject for t1w in batch):
            if all(t1w.path in through for t1w in inputs if t1w.subject == subject):
                write_participant_report(output_dir, subject, inputs)
                reported.add(subject)
                finished(subject)
        return failures

    return handle, reported


def _load_models(options: ParticipantOptions, resources: Resources, device: str
                 ) -> tuple[list[LoadedModel], ModelStepSettings]:
    """The bundles on their device, and the model step's settings (a bad --models fails now,
    not after hours of preprocessing)."""
    torch.set_num_threads(resources.model_threads)
    torch.manual_seed(options.preproc.seed)
    if options.preproc.deterministic:
        torch.use_deterministic_algorithms(True)
    models = load_models(options.models, device)
    LOGGER.info("%d model(s) on %s: %s", len(models), device,
                ", ".join(f"{m.bundle.name} ({m.target}, {len(m.nets)} folds)" for m in models))
    return models, ModelStepSettings(device=device, threads=resources.model_threads,
                                     batch_size=resources.model_batch_size,
                                     deterministic=options.preproc.deterministic,
                                     seed=options.preproc.seed, attention=options.attention)


def run_participant_level(bids_dir: Path, output_dir: Path, work_dir: Path,
                          inputs: list[T1wInput], options: ParticipantOptions) -> ExitCode:
    """Check the models, preprocess every T1w, apply the models, write the reports."""
    device = "cpu" if options.preproc_only else resolve_device(options.device)
    resources = plan_resources(nprocs=options.nprocs, omp_nthreads=options.omp_nthreads,
                               mem_gb=options.mem_gb, n_inputs=len(inputs),
                               deterministic=options.preproc.deterministic,
                               model_batch_size=options.model_batch_size, device=device,
                               applies_models=not options.preproc_only)
    models, settings = [], ModelStepSettings()
    if not options.preproc_only:
        models, settings = _load_models(options, resources, device)
    write_dataset_description(output_dir, [bids_dir])
    subjects = {t1w.subject for t1w in inputs}
    for stale in remove_stale_temporaries(
            output_dir, lambda relative: any(names_participant(relative, s) for s in subjects)):
        LOGGER.info("removed %s, left by an interrupted run", stale)
    LOGGER.info("%d T1w image(s) of %d participant(s) selected; %s", len(inputs),
                len({item.subject for item in inputs}), resources.describe())
    if options.preproc.sloppy:
        LOGGER.warning("--sloppy: coarse registration for tests; do not use these outputs")
    preproc = replace(options.preproc, omp_nthreads=resources.omp_nthreads)
    with participants_in_progress(output_dir, subjects) as finished:
        handle, reported = finish_participants(output_dir, inputs, models, settings, finished,
                                               source_dataset(bids_dir, models))
        with AfterPreprocessing(handle, settings.batch_size) as after:
            with thread_environment(resources):
                failures = preprocess(inputs, bids_dir, output_dir, work_dir, preproc,
                                      resources, verbose=options.verbose,
                                      on_written=after.submit)
        failures += after.failures
    failed = {failure.t1w.path for failure in failures}
    qc_failed = qc_gate(output_dir, [t1w for t1w in inputs if t1w.path not in failed])
    try:
        write_reports(output_dir, inputs, subjects - reported)
    finally:  # the failures are told even when a report cannot be written
        for reason in qc_failed:
            print(f"bids_mdd: QC failed: {reason}", file=sys.stderr)
        for failure in failures:
            print(f"bids_mdd: failed: {failure.reason}", file=sys.stderr)
        if failures:
            LOGGER.error("%d of %d T1w image(s) failed; crash files in %s", len(failures),
                         len(inputs), output_dir / "logs")
    code = exit_code_for(failures, len(inputs))
    if code == ExitCode.OK and qc_failed and not options.qc_fail_ok:
        LOGGER.error("%d of %d T1w image(s) failed the QC gate (exit %d; --qc-fail-ok: exit 0)",
                     len(qc_failed), len(inputs), int(ExitCode.QC_FAILED))
        return ExitCode.QC_FAILED
    return code
