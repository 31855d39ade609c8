"""Preprocess every selected T1w in one nipype graph; a failing participant never stops the
others."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from pathlib import Path

from nipype import config as nipype_config
from nipype import logging as nipype_logging
from tqdm import tqdm

from bids_mdd.bids.discovery import T1wInput
from bids_mdd.errors import BidsMddError
from bids_mdd.participant.failures import (Failure, crashed_node, failure_line, from_error,
                                           node_failure, write_crash)
from bids_mdd.participant.resources import Resources, nipype_plugin
from bids_mdd.preproc.inputs import load_t1w
from bids_mdd.preproc.workflow import PreprocOptions, init_bids_mdd_wf, workflow_name

LOGGER = logging.getLogger(__name__)


def configure_nipype(verbose: bool) -> None:
    """nipype's logging (warnings unless verbose), text crash files, every output kept, no
    workflow report."""
    level = "INFO" if verbose else "WARNING"
    for key in ("workflow_level", "interface_level", "utils_level"):
        nipype_config.set("logging", key, level)
    nipype_logging.update_logging(nipype_config)
    nipype_config.set("execution", "crashfile_format", "txt")
    nipype_config.set("execution", "remove_unnecessary_outputs", "false")
    # no graph report in the work dir's top folder: HPC array tasks sharing a work dir would
    # all write the same files there
    nipype_config.set("execution", "create_report", "false")


def _progress(t1ws: list[T1wInput]) -> tuple[Callable, Callable[[], None]]:
    """A nipype status callback logging each T1w whose outputs are written, and its closer."""
    names = {workflow_name(t1w): t1w for t1w in t1ws}
    bar = tqdm(total=len(t1ws), desc="participants", unit="T1w", disable=len(t1ws) < 2)

    def callback(node, status: str) -> None:
        if node.name == "derivatives" and status == "end":
            t1w = names.get(node.fullname.split(".")[-2])
            LOGGER.info("preprocessed %s", t1w.path if t1w else node.fullname)
            bar.update()

    return callback, bar.close


def preprocess(inputs: list[T1wInput], bids_dir: Path, output_dir: Path, work_dir: Path,
               options: PreprocOptions, resources: Resources,
               verbose: bool = False) -> list[Failure]:
    """Preprocess every T1w in one graph; return the failures (also logged, and in logs/)."""
    logs = output_dir / "logs"
    configure_nipype(verbose)
    failures, ready = [], []
    for t1w in inputs:
        try:
            load_t1w(t1w.path)  # fail fast, with the reason, before any work
        except BidsMddError as error:
            failures.append(from_error(logs, t1w, error))
            LOGGER.error("%s", failures[-1].reason)
        else:
            ready.append(t1w)
    if not ready:
        return failures
    workflow = init_bids_mdd_wf(t1ws=ready, bids_dir=bids_dir, output_dir=output_dir,
                                options=options)
    workflow.base_dir = str(work_dir)
    workflow.config["execution"]["crashdump_dir"] = str(logs)
    plugin, plugin_args = nipype_plugin(resources)
    callback, close = _progress(ready)
    before = set(logs.glob("crash-*")) if logs.is_dir() else set()
    try:
        workflow.run(plugin=plugin, plugin_args={**plugin_args, "status_callback": callback})
    except Exception:  # nipype reports node crashes as one RuntimeError at the end
        trace = traceback.format_exc()
    else:
        trace = ""
    finally:
        close()
    crashes = sorted(set(logs.glob("crash-*")) - before) if logs.is_dir() else []
    for t1w in ready:
        name = workflow_name(t1w)
        mine = [crash for crash in crashes if f".{name}." in f".{crashed_node(crash)}."]
        if mine:
            failures.append(node_failure(t1w, mine[0], logs))
        elif trace and not crashes:  # the graph itself failed: every participant is affected
            crash = write_crash(logs, t1w, trace)
            failures.append(Failure(t1w, failure_line(f"{t1w.path}: preprocessing failed",
                                                      trace, crash), crash))
        else:
            continue
        LOGGER.error("%s", failures[-1].reason)
    return failures
