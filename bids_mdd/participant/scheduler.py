"""nipype's MultiProc, depth-first: each participant's next step goes before the steps of
participants behind it, so participants finish one after another as the run goes."""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor

from nipype.pipeline.plugins.multiproc import MultiProcPlugin, process_initializer

from bids_mdd.lifetime import die_with_parent
from bids_mdd.participant.resources import Resources

#: Seconds between two looks of nipype's scheduler at its workers (nipype's default is 2): a
#: node found cached only frees the next one at the next look, so a resume of a long chain of
#: cached steps otherwise waits 2 s per step.
POLL_SECONDS = 0.1


class DepthFirstMultiProcPlugin(MultiProcPlugin):
    """MultiProc whose ready jobs are ordered by their participant's rank, then as nipype
    orders them (topologically).

    nipype's own order ("tsort") is the flat graph's topological order, which puts every
    participant's first step before any second step: breadth-first, so no participant finishes
    until nearly all have. Ordered by rank, a free core takes the first participant's next
    step whenever one is ready and another participant's otherwise, so the cores stay as busy
    as before and memory stays within ``memory_gb`` as before.
    """

    def __init__(self, plugin_args: dict | None = None,
                 rank_of: Callable[[str], int] | None = None) -> None:
        super().__init__(plugin_args=plugin_args)
        self._rank_of = rank_of or (lambda fullname: 0)
        # nipype's pool, with workers that die with this process (its workers start at the
        # first task, so none has yet): a SIGKILLed run leaves no worker behind
        self.pool.shutdown(wait=False)
        self.pool = ProcessPoolExecutor(
            max_workers=self.processors, initializer=_start_worker,
            initargs=(self._cwd, os.getpid()),
            mp_context=mp.get_context(self.plugin_args.get("mp_context")))

    def _sort_jobs(self, jobids: Sequence[int], scheduler: str = "tsort") -> list[int]:
        return sorted(jobids, key=lambda job: (self._rank_of(self.procs[job].fullname), job))


def _start_worker(cwd: str, parent_pid: int) -> None:
    """nipype's worker set-up, and the worker's end with its parent's."""
    die_with_parent(parent_pid)
    process_initializer(cwd)


def rank_by_workflow(names: Sequence[str]) -> Callable[[str], int]:
    """A node's rank: the position of its participant's workflow name in ``names`` (nodes
    outside them last)."""
    ranks = {name: index for index, name in enumerate(names)}

    def rank_of(fullname: str) -> int:
        return next((ranks[part] for part in fullname.split(".") if part in ranks), len(ranks))

    return rank_of


def nipype_runner(resources: Resources, workflow_names: Sequence[str],
                  status_callback: Callable) -> DepthFirstMultiProcPlugin:
    """The plugin that runs the participants' graph: depth-first MultiProc with ``--nprocs``
    workers within ``--mem-gb`` (also for one process: nipype's Linear plugin runs in this
    process, where a signal could not stop a step)."""
    args: dict = {"n_procs": resources.nprocs, "raise_insufficient": False,
                  "status_callback": status_callback}
    if resources.mem_gb:
        args["memory_gb"] = resources.mem_gb
    runner = DepthFirstMultiProcPlugin(plugin_args=args, rank_of=rank_by_workflow(workflow_names))
    # Fork every worker now, while this process runs nothing else: the model step's thread
    # starts on finished participants next, and a child forked in the middle of torch's work
    # inherits its threads' locks (a forking pool starts all its workers at the first task).
    runner.pool.submit(os.getpid).result()
    return runner
