"""Run preprocessing, then the models, for each T1w; a failing participant never stops the others."""

from __future__ import annotations

import logging
import os
import traceback
from dataclasses import dataclass
from pathlib import Path

from nipype import config as nipype_config
from nipype import logging as nipype_logging
from tqdm import tqdm

from bids_mdd.bids.discovery import T1wInput
from bids_mdd.errors import BidsMddError, ExitCode
from bids_mdd.models.inference import LoadedModel
from bids_mdd.models.participant import predict_participant, up_to_date
from bids_mdd.preproc.inputs import load_t1w
from bids_mdd.preproc.report import write_participant_report
from bids_mdd.preproc.workflow import PreprocOptions, init_anat_preproc_wf

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class Failure:
    """One T1w that could not be preprocessed, with a one-line reason and its crash file."""

    t1w: T1wInput
    reason: str
    crash_file: Path
    bad_data: bool


def crash_name(t1w: T1wInput) -> str:
    """The name of the crash file bids_mdd writes under OUTPUT_DIR/logs for ``t1w``."""
    return "crash-" + "_".join(f"{k}-{v}" for k, v in t1w.output_entities().items()) + ".txt"


def _write_crash(logs: Path, t1w: T1wInput, text: str) -> Path:
    logs.mkdir(parents=True, exist_ok=True)
    path = logs / crash_name(t1w)
    path.write_text(text, encoding="utf-8")
    return path


def _node_failure(t1w: T1wInput, logs: Path, before: set[Path], trace: str) -> Failure:
    """A failure naming the node that crashed and its error, from nipype's new crash file."""
    new = sorted(set(logs.glob("crash-*")) - before) if logs.is_dir() else []
    if not new:
        crash = _write_crash(logs, t1w, trace)
        return Failure(t1w, f"{t1w.path}: preprocessing failed; see {crash}", crash, False)
    lines = [line for line in new[0].read_text(encoding="utf-8").splitlines() if line.strip()]
    error = next((line for line in reversed(lines) if "Error" in line), lines[-1])
    return Failure(t1w, f"{t1w.path}: preprocessing failed ({error.strip()}); crash file: "
                        f"{new[0]}", new[0], False)


def _plugin(nprocs: int | None, mem_gb: float | None) -> tuple[str, dict]:
    n_procs = nprocs or os.cpu_count() or 1
    if n_procs == 1:
        return "Linear", {}
    args: dict = {"n_procs": n_procs, "raise_insufficient": False}
    if mem_gb:
        args["memory_gb"] = mem_gb
    return "MultiProc", args


def preprocess(inputs: list[T1wInput], bids_dir: Path, output_dir: Path, work_dir: Path,
               options: PreprocOptions, nprocs: int | None = None,
               mem_gb: float | None = None, verbose: bool = False) -> list[Failure]:
    """Preprocess every T1w; return the failures (reasons also logged and kept in logs/)."""
    logs = output_dir / "logs"
    level = "INFO" if verbose else "WARNING"
    for key in ("workflow_level", "interface_level", "utils_level"):
        nipype_config.set("logging", key, level)
    nipype_logging.update_logging(nipype_config)
    nipype_config.set("execution", "crashfile_format", "txt")
    nipype_config.set("execution", "remove_unnecessary_outputs", "false")
    plugin, plugin_args = _plugin(nprocs, mem_gb)
    failures = []
    for t1w in tqdm(inputs, desc="participants", unit="T1w", disable=len(inputs) < 2):
        before = set(logs.glob("crash-*")) if logs.is_dir() else set()
        try:
            load_t1w(t1w.path)  # fail fast, with the reason, before any work
            workflow = init_anat_preproc_wf(t1w, bids_dir, output_dir, options)
            workflow.base_dir = str(work_dir)
            workflow.config["execution"]["crashdump_dir"] = str(logs)
            workflow.run(plugin=plugin, plugin_args=plugin_args)
        except BidsMddError as exc:
            crash = _write_crash(logs, t1w, f"{exc}\n")
            failures.append(Failure(t1w, str(exc), crash,
                                    exc.exit_code == ExitCode.BAD_DATA))
        except Exception:  # nipype reports node crashes as one RuntimeError at the end
            failures.append(_node_failure(t1w, logs, before, traceback.format_exc()))
        else:
            LOGGER.info("preprocessed %s", t1w.path)
            continue
        LOGGER.error("%s", failures[-1].reason)
    return failures


def apply_models(inputs: list[T1wInput], output_dir: Path, models: list[LoadedModel],
                 device: str) -> list[Failure]:
    """Apply the loaded models to each preprocessed T1w; return the failures."""
    logs = output_dir / "logs"
    failures = []
    for t1w in tqdm(inputs, desc="models", unit="T1w", disable=len(inputs) < 2):
        entities = t1w.output_entities()
        if up_to_date(output_dir, entities, models):
            LOGGER.info("predictions of %s are up to date with these models", t1w.path)
            continue
        try:
            table = predict_participant(output_dir, entities, models, device)
        except BidsMddError as exc:
            crash = _write_crash(logs, t1w, f"{exc}\n")
            failures.append(Failure(t1w, str(exc), crash, exc.exit_code == ExitCode.BAD_DATA))
        except Exception:  # one participant's failure never stops the others
            crash = _write_crash(logs, t1w, traceback.format_exc())
            failures.append(Failure(t1w, f"{t1w.path}: applying the models failed; see "
                                         f"{crash}", crash, False))
        else:
            LOGGER.info("wrote %s", table)
            continue
        LOGGER.error("%s", failures[-1].reason)
    return failures


def write_reports(output_dir: Path, inputs: list[T1wInput]) -> None:
    """One HTML report per participant, covering all of its T1w images."""
    for subject in dict.fromkeys(t1w.subject for t1w in inputs):
        write_participant_report(output_dir, subject, inputs)


def exit_code_for(failures: list[Failure], n_inputs: int) -> ExitCode:
    """0 when all succeeded; 65 when every input failed on bad data; 1 otherwise."""
    if not failures:
        return ExitCode.OK
    if len(failures) == n_inputs and all(f.bad_data for f in failures):
        return ExitCode.BAD_DATA
    return ExitCode.FAILURE
