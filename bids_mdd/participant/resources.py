"""The CPUs and memory this process may use, and how the participant level splits them."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bids_mdd.preproc.workflow import LARGEST_NODE_MEM_GB

LOGGER = logging.getLogger(__name__)

#: Most ITK/torch threads given to one node by default (ITK gains little beyond).
MAX_DEFAULT_OMP = 8

#: Memory kept back from ``--mem-gb`` for the model step, which runs in the main process while
#: the graph's nodes run: the full-size networks' peak with attention maps, rounded up
#: (``benchmarks/inference.py``).
MODEL_STEP_MEM_GB = 3.0

#: The least memory bound left to the graph: its largest node's estimate, so that a node
#: still runs, alone, under a small ``--mem-gb``.
MIN_GRAPH_MEM_GB = LARGEST_NODE_MEM_GB


def _positive_int(text: str | None) -> int | None:
    try:
        value = int(str(text).split("(")[0])  # SLURM_JOB_CPUS_PER_NODE may read "4(x2)"
    except ValueError:
        return None
    return value if value > 0 else None


def _cgroup_cpus(path: str = "/sys/fs/cgroup/cpu.max") -> int | None:
    """The CPU quota of a cgroup-v2 container (``docker --cpus``), rounded up; None if none."""
    try:
        quota, period = Path(path).read_text(encoding="ascii").split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return max(1, -(-int(quota) // int(period)))


def available_cpus(environ: Mapping[str, str] = os.environ) -> int:
    """CPUs this process may use: its affinity mask (``taskset``, SLURM's cgroups), SLURM's
    allocation (``SLURM_CPUS_PER_TASK``, else ``SLURM_CPUS_ON_NODE``: with ``task/none`` the
    affinity mask is the whole node) and a container's CPU quota, whichever is smallest.
    ``os.cpu_count()`` counts the machine's CPUs, not these.
    """
    try:
        counts = [len(os.sched_getaffinity(0))]
    except AttributeError:  # macOS has no affinity mask
        counts = [os.cpu_count() or 1]
    slurm = (_positive_int(environ.get("SLURM_CPUS_PER_TASK"))
             or _positive_int(environ.get("SLURM_CPUS_ON_NODE")))
    counts += [n for n in (slurm, _cgroup_cpus()) if n]
    return max(1, min(counts))


def available_mem_gb(environ: Mapping[str, str] = os.environ) -> float | None:
    """SLURM's memory allocation for this job in GB (``--mem`` or ``--mem-per-cpu``), if any."""
    per_node = _positive_int(environ.get("SLURM_MEM_PER_NODE"))
    if per_node:
        return per_node / 1024
    per_cpu = _positive_int(environ.get("SLURM_MEM_PER_CPU"))
    cpus = _positive_int(environ.get("SLURM_CPUS_PER_TASK"))
    return per_cpu * cpus / 1024 if per_cpu and cpus else None


@dataclass(frozen=True)
class Resources:
    """How the participant level uses the machine (recorded in the log, and its threads in
    every sidecar)."""

    nprocs: int  # nipype MultiProc processes: nodes of any participants at once
    omp_nthreads: int  # ITK / torch threads of one preprocessing node
    mem_gb: float | None  # MultiProc's memory bound (None: nipype's default, 90 % of RAM)
    model_threads: int  # torch threads of the model step (a thread beside the graph)
    model_batch_size: int  # participants per forward pass of the model step
    model_mem_gb: float = 0.0  # kept back from --mem-gb for the model step

    def describe(self) -> str:
        mem = f"{self.mem_gb:g} GB" if self.mem_gb else "nipype's default memory bound"
        if self.mem_gb and self.model_mem_gb:
            mem += f" (+ {self.model_mem_gb:g} GB kept for the model step)"
        return (f"{self.nprocs} process(es) x {self.omp_nthreads} thread(s) each, {mem}; "
                f"models: {self.model_threads} thread(s), batches of {self.model_batch_size}")


def plan_resources(*, nprocs: int | None, omp_nthreads: int | None, mem_gb: float | None,
                   n_inputs: int, deterministic: bool, model_batch_size: int | None,
                   device: str, applies_models: bool = True,
                   environ: Mapping[str, str] = os.environ) -> Resources:
    """Fill in what the command line left open.

    ``--mem-gb`` (or SLURM's allocation) bounds the whole process: the graph gets it less
    ``MODEL_STEP_MEM_GB`` when models are applied on the CPU (their tensors then live in host
    memory beside the graph's nodes), but never less than ``MIN_GRAPH_MEM_GB``.
    ``--nprocs``: the CPUs the process may use. ``--omp-nthreads``: the processes' share when
    there are fewer T1w than processes (one participant gets up to 8 threads), else 1, so that
    many participants run one per core. ``--deterministic`` pins every step to one thread and
    the model step to batches of one, the settings whose results do not depend on ``--nprocs``.
    """
    cpus = nprocs or available_cpus(environ)
    if deterministic:
        if omp_nthreads not in (None, 1):
            LOGGER.warning("--deterministic runs every step single-threaded: --omp-nthreads %d "
                           "is ignored", omp_nthreads)
        omp, model_threads, batch = 1, 1, 1
    else:
        omp = omp_nthreads or max(1, min(MAX_DEFAULT_OMP, cpus // max(1, n_inputs)))
        model_threads = cpus
        batch = model_batch_size or (4 if device == "cuda" else 1)
    total_gb = mem_gb or available_mem_gb(environ)
    model_gb = MODEL_STEP_MEM_GB if applies_models and device == "cpu" else 0.0
    graph_gb = max(total_gb - model_gb, MIN_GRAPH_MEM_GB) if total_gb else None
    if total_gb and graph_gb and graph_gb + model_gb > total_gb:
        LOGGER.warning("--mem-gb %g leaves less than %g GB for preprocessing beside the model "
                       "step's %g GB: the graph runs one node at a time and the run may use "
                       "up to %g GB", total_gb, MIN_GRAPH_MEM_GB, model_gb, graph_gb + model_gb)
    return Resources(nprocs=cpus, omp_nthreads=min(omp, cpus), mem_gb=graph_gb,
                     model_threads=model_threads, model_batch_size=batch,
                     model_mem_gb=model_gb if total_gb else 0.0)


#: The numerical libraries' thread variables (OpenMP, MKL, OpenBLAS). The images set none of
#: them: bids_mdd sets them from --omp-nthreads, so a run has the same threads in Docker,
#: Apptainer and a virtual environment.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@contextmanager
def thread_environment(resources: Resources) -> Iterator[dict[str, str]]:
    """Set the thread variables to one node's share of the CPUs for the processes started
    inside (nipype's node processes, deepbet's); restore them after."""
    saved = {variable: os.environ.get(variable) for variable in THREAD_VARIABLES}
    values = {variable: str(resources.omp_nthreads) for variable in THREAD_VARIABLES}
    os.environ.update(values)
    try:
        yield values
    finally:
        for variable, value in saved.items():
            if value is None:
                os.environ.pop(variable, None)
            else:
                os.environ[variable] = value

