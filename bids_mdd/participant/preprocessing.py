"""Preprocess every selected T1w in one nipype graph, participants finishing one after
another; a failing participant never stops the others."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nipype import config as nipype_config
from nipype import logging as nipype_logging
from tqdm import tqdm

from bids_mdd.bids.discovery import T1wInput
from bids_mdd.bids.names import sidecar_path
from bids_mdd.bids.outputs import OUTPUTS
from bids_mdd.errors import BidsMddError
from bids_mdd.participant import completion
from bids_mdd.participant.failures import (
    Failure,
    crashed_node,
    from_error,
    node_failure,
    traceback_failure,
)
from bids_mdd.participant.resources import Resources
from bids_mdd.participant.scheduler import (
    POLL_SECONDS,
    DepthFirstMultiProcPlugin,
    nipype_runner,
    rank_by_workflow,
)
from bids_mdd.preproc.inputs import load_t1w
from bids_mdd.preproc.workflow import PreprocOptions, init_bids_mdd_wf, workflow_name

LOGGER = logging.getLogger(__name__)


def configure_nipype(verbose: bool) -> None:
    """nipype's logging (only its own critical errors unless verbose: a failed step is told as
    one line by us, its traceback is in the crash file), text crash files, every output kept,
    no workflow report."""
    level = "INFO" if verbose else "CRITICAL"
    for key in ("workflow_level", "interface_level", "utils_level"):
        nipype_config.set("logging", key, level)
    nipype_logging.update_logging(nipype_config)
    nipype_config.set("execution", "crashfile_format", "txt")
    nipype_config.set("execution", "remove_unnecessary_outputs", "false")
    # no graph report in the work dir's top folder: HPC array tasks sharing a work dir would
    # all write the same files there
    nipype_config.set("execution", "create_report", "false")


@dataclass
class GraphOutcome:
    """What nipype's status callback saw, per T1w workflow name: the steps that raised, and
    the T1w whose derivatives step ended (run or found cached). It does not depend on the
    crash files, which a full or read-only disk leaves empty or unwritten."""

    failed_steps: dict[str, Any] = field(default_factory=dict)  # name -> nipype node
    written: set[str] = field(default_factory=set)

    def step_trace(self, name: str) -> str:
        """The traceback nipype attached to the T1w's failed step ("" if none)."""
        trace = getattr(self.failed_steps.get(name), "_traceback", None) or ""
        return trace if isinstance(trace, str) else "".join(trace)


def _progress(t1ws: list[T1wInput], work_dir: Path, output_dir: Path,
              made_from: dict[str, dict[str, Any]], on_written: Callable[[T1wInput], None]
              ) -> tuple[Callable, Callable[[], None], GraphOutcome]:
    """A nipype status callback, its closer, and the outcome it records.

    The progress bar counts the T1w whose derivatives are written and names the step just
    started. A T1w whose derivatives step ends is recorded as finished (``completion``) and
    handed to ``on_written`` at once, while the graph goes on with the others.
    """
    names = {workflow_name(t1w): t1w for t1w in t1ws}
    ordered = list(names)
    rank_of = rank_by_workflow(ordered)
    bar = tqdm(total=len(t1ws), desc="participants", unit="T1w", disable=len(t1ws) < 2)
    outcome = GraphOutcome()

    def callback(node, status: str) -> None:
        rank = rank_of(node.fullname)
        name = ordered[rank] if rank < len(ordered) else None
        t1w = names.get(name)
        if status == "start" and t1w:
            bar.set_postfix_str(f"{t1w.path.name}: {node.name}", refresh=True)
        if status == "exception" and name:
            outcome.failed_steps.setdefault(name, node)
        if node.name == "derivatives" and status == "end" and t1w:
            outcome.written.add(name)
            LOGGER.info("preprocessed %s", t1w.path)
            if not missing_outputs(output_dir, t1w):
                completion.record_finished(work_dir, t1w, made_from[name], output_dir)
                on_written(t1w)
            bar.update()

    return callback, bar.close, outcome


def missing_outputs(output_dir: Path, t1w: T1wInput) -> list[str]:
    """The preprocessing derivatives of ``t1w`` not in ``output_dir`` (images with their
    sidecars)."""
    outputs = t1w.outputs(output_dir)
    missing = []
    for name in OUTPUTS:
        path = outputs.output(name)
        if not path.is_file() or (path.name.endswith(".nii.gz")
                                  and not sidecar_path(path).is_file()):
            missing.append(name)
    return missing


def _ignore(t1w: T1wInput) -> None:
    pass


def preprocess(inputs: list[T1wInput], bids_dir: Path, output_dir: Path, work_dir: Path,
               options: PreprocOptions, resources: Resources, verbose: bool = False,
               on_written: Callable[[T1wInput], None] = _ignore) -> list[Failure]:
    """Preprocess every T1w in one graph, depth-first; return the failures (also logged, and
    in logs/). ``on_written`` gets each T1w as soon as its derivatives are all written (a T1w
    finished by an earlier run with the same inputs and options at once, without the graph)."""
    logs = output_dir / "logs"
    configure_nipype(verbose)
    failures, ready = [], []
    for t1w in inputs:
        try:
            t1w.outputs(output_dir).check_name_lengths(t1w.path)  # fail fast, before any
            load_t1w(t1w.path)  # work, with the reason
        except BidsMddError as error:
            failures.append(from_error(logs, t1w, error))
            LOGGER.error("%s", failures[-1].reason)
        else:
            ready.append(t1w)
    made_from = {workflow_name(t1w): completion.made_from(t1w, bids_dir, output_dir, options)
                 for t1w in ready}
    finished = [t1w for t1w in ready if completion.is_finished(
        work_dir, t1w, made_from[workflow_name(t1w)], output_dir)]
    todo = [t1w for t1w in ready if t1w not in finished]
    workflow = init_bids_mdd_wf(t1ws=todo, bids_dir=bids_dir, output_dir=output_dir,
                                options=options)
    workflow.base_dir = str(work_dir)
    workflow.config["execution"]["crashdump_dir"] = str(logs)
    workflow.config["execution"]["poll_sleep_duration"] = POLL_SECONDS
    callback, close, outcome = _progress(todo, work_dir, output_dir, made_from, on_written)
    runner = nipype_runner(resources, [workflow_name(t1w) for t1w in todo], callback) \
        if todo else None
    for t1w in finished:  # after the runner's workers are forked (see nipype_runner)
        LOGGER.info("%s: derivatives up to date with these inputs and options", t1w.path)
        on_written(t1w)
    if runner is None:
        close()
        return failures
    return failures + _run_graph(workflow, runner, close, outcome, todo, output_dir)


def _run_graph(workflow, runner: DepthFirstMultiProcPlugin, close: Callable[[], None],
               outcome: GraphOutcome, todo: list[T1wInput], output_dir: Path) -> list[Failure]:
    """Run the graph; the failure of each T1w of ``todo`` that failed."""
    logs = output_dir / "logs"
    before = set(logs.glob("crash-*")) if logs.is_dir() else set()
    try:
        workflow.run(plugin=runner)
    except Exception:  # nipype reports node crashes as one RuntimeError at the end
        trace = traceback.format_exc()
    else:
        trace = ""
    finally:
        close()
    crashes = sorted(set(logs.glob("crash-*")) - before) if logs.is_dir() else []
    failures = []
    for t1w in todo:
        failure = _failure_of(t1w, outcome, crashes, trace, output_dir)
        if failure:
            failures.append(failure)
            LOGGER.error("%s", failure.reason)
    return failures


def _failure_of(t1w: T1wInput, outcome: GraphOutcome, crashes: list[Path], trace: str,
                output_dir: Path) -> Failure | None:
    """The T1w's failure in this run, if any: from its nipype crash file when one is readable,
    else from the step nipype reported, else from derivatives that are missing. A T1w counts
    as done only when its derivatives step ended and every derivative is there."""
    logs, name = output_dir / "logs", workflow_name(t1w)
    mine = [crash for crash in crashes if f".{name}." in f".{_node_of(crash)}."]
    if mine:
        return node_failure(t1w, mine[0], logs)
    step = outcome.failed_steps.get(name)
    missing = [] if step else missing_outputs(output_dir, t1w)
    if not step and name in outcome.written and not missing:
        return None
    what = (f"{t1w.path}: preprocessing failed in step {step.name}" if step else
            f"{t1w.path}: preprocessing did not write "
            f"{'its derivatives' if len(missing) == len(OUTPUTS) else ', '.join(missing)}")
    text = outcome.step_trace(name) or trace or "no error was reported"
    return traceback_failure(t1w, what, text, logs)


def _node_of(crash: Path) -> str:
    try:
        return crashed_node(crash)
    except (OSError, UnicodeDecodeError):
        return ""
